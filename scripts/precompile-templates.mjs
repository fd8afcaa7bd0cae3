// The built-in rule templates (rules/**/*.hbs), compiled by Handlebars at build time: the bundle then carries them
// as JavaScript, which V8's code cache holds, instead of parsing and compiling them at every start (about 20 ms of
// a 2-VLAN start). build.mjs puts the module this returns in place of src/template/precompiled.ts. The templates
// are matched by their exact text, so an edited file on disk is compiled at run time as before.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Handlebars from 'handlebars';

/** The options src/template/render.ts compiles with; it ignores a precompiled set made with others. */
export const TEMPLATE_OPTIONS = Object.freeze({ strict: true, noEscape: true });

/** The source of a module exporting `precompiled`: the options, and each template's text with its compiled form. */
export function precompiledTemplatesModule(rulesDir) {
  const files = readdirSync(rulesDir, { recursive: true }).filter((f) => String(f).endsWith('.hbs')).sort();
  const entries = files.map((f) => {
    const source = readFileSync(join(rulesDir, String(f)), 'utf8');
    // Handlebars adds to the options object it is given: a copy.
    return `[${JSON.stringify(source)}, ${Handlebars.precompile(source, { ...TEMPLATE_OPTIONS })}]`;
  });
  return `export const precompiled = { options: ${JSON.stringify(TEMPLATE_OPTIONS)}, templates: new Map([\n${entries.join(',\n')}\n]) };\n`;
}
