/**
 * The built-in templates compiled at build time, keyed by their text. From source (tsx) there are none and every
 * template is compiled when first used; the bundle gets the real set from scripts/precompile-templates.mjs.
 */
// TemplateSpecification: a global type of handlebars' declarations (what Handlebars.precompile returns).
export const precompiled: { options: object; templates: ReadonlyMap<string, TemplateSpecification> } = {
  options: {},
  templates: new Map(),
};
