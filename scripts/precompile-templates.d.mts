// Types for precompile-templates.mjs (imported by build.mjs, and by test/unit/precompiled-templates.test.ts).
export declare const TEMPLATE_OPTIONS: Readonly<{ strict: boolean; noEscape: boolean }>;
export declare function precompiledTemplatesModule(rulesDir: string): string;
