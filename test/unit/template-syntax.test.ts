/**
 * A user template that does not parse: what the user is told, for each mistake a person makes in Handlebars. The line
 * is the one to fix (Handlebars' own is the opening tag's, or the end of the file), and the words are the template's,
 * not the parser's tokens ("Expecting 'CLOSE_RAW_BLOCK', 'CLOSE', … got 'INVALID'").
 */
import test from 'ava';
import { templateSyntaxProblem } from '../../src/template/render.js';

const rows: ReadonlyArray<readonly [string, string, string]> = [
  ['a block closed by a misspelt name: the closing tag\'s line, not the opening one\'s',
    '-i eth1 -j ACCEPT\n{{#each vlans}}\n-i {{nic}} -j REJECT\n{{/eac}}\n',
    'syntax error on template line 4: "{{/eac}}" closes {{#each}}, opened on template line 2; close it with {{/each}}'],
  ['an inner block left open, its outer one closed',
    '{{#each vlans}}\n{{#if nic}}\n-i {{nic}} -j REJECT\n{{/each}}\n',
    'syntax error on template line 4: "{{/each}}" closes {{#if}}, opened on template line 2; close it with {{/if}}'],
  ['a block never closed: where it opens, not the end of the file',
    '-i eth1 -j ACCEPT\n{{#each vlans}}\n-i {{nic}} -j REJECT\n',
    'syntax error on template line 2: "{{#each vlans}}" is never closed; end the block with {{/each}}'],
  ['a block never closed, after a comment that holds an opening tag',
    '{{!-- {{#each vlans}} --}}\n{{#if uplink.nic}}\n-o {{uplink.nic}} -j ACCEPT\n',
    'syntax error on template line 2: "{{#if uplink.nic}}" is never closed; end the block with {{/if}}'],
  ['a closing tag with no block open',
    '-i eth1 -j ACCEPT\n{{/each}}\n',
    'syntax error on template line 2: "{{/each}}" closes no block (no {{#each}} is open there)'],
  ['a {{ closed by one brace, the last in the file',
    '-i eth1 -j ACCEPT\n-i {{nic} -j DROP\n',
    'syntax error on template line 2: "{{nic} -j DROP" has no closing }}'],
  ['a {{ closed by one brace, with tags after it',
    '-i eth1 -j ACCEPT\n-i {{nic} -j DROP\n-i {{nic}} -j ACCEPT\n',
    'syntax error on template line 2, "-i {{nic} -j DROP": a {{ … }} there holds a character Handlebars does not read in one (a }} written as }?)'],
  ['a {{ never closed',
    '-j ACCEPT\n-i {{nic -j DROP\n',
    'syntax error on template line 2: "{{nic -j DROP" has no closing }}'],
  ['a closing tag never closed, at the end of the file',
    '{{#each vlans}}\n-i {{nic}} -j ACCEPT\n{{/each',
    'syntax error on template line 3: "{{/each" has no closing }}'],
  ['a {{ not closed before the next one',
    '-i eth1 -j ACCEPT\n-i {{nic -j {{uplink.nic}}\n',
    'syntax error on template line 2: "{{nic -j {{uplink.nic}}" opens a {{ inside another; close the first with }}'],
  ['a comment never closed',
    '{{!-- the office\n-i x -j DROP\n',
    'syntax error on template line 1: "{{!-- the office" has no closing --}}'],
  ['{{else}} outside a block',
    '-j ACCEPT\n{{else}}\n',
    'syntax error on template line 2, "{{else}}": an {{else}} (or {{^}}) outside an {{#if}}, {{#unless}} or {{#each}} block, or a second one in a block'],
  ['a second {{else}} in a block',
    '{{#if uplink.nic}}\n-j ACCEPT\n{{else}}\n-j DROP\n{{else}}\n-j REJECT\n{{/if}}\n',
    'syntax error on template line 5, "{{else}}": an {{else}} (or {{^}}) outside an {{#if}}, {{#unless}} or {{#each}} block, or a second one in a block'],
  ['an empty {{}}',
    '-i {{}} -j DROP\n',
    'syntax error on template line 1, "-i {{}} -j DROP": a {{ }} with no name in it, or a {{{ closed by }} (or {{ by }}})'],
  ['{{{ closed by }}',
    '-i {{{nic}} -j DROP\n',
    'syntax error on template line 1, "-i {{{nic}} -j DROP": a {{ }} with no name in it, or a {{{ closed by }} (or {{ by }}})'],
];

for (const [title, source, said] of rows) {
  test(`a template that does not parse is said at the line to fix: ${title}`, (t) => {
    t.is(templateSyntaxProblem(source, 'filter/forward.hbs')?.detail, said);
  });
}

test('templates that parse have no syntax problem: else, {{^}}, an inverse block, a partial block, a comment with braces', (t) => {
  for (const source of [
    '{{#each vlans}}{{#if nic}}-i {{nic}} -j ACCEPT{{else}}-j DROP{{/if}}{{/each}}\n',
    '{{#if uplink.nic}}-o {{uplink.nic}} -j ACCEPT{{^}}-j DROP{{/if}}\n',
    '{{^if uplink.nic}}-j DROP{{/if}}\n',
    '{{#*inline "drop"}}-s {{subnet}} -j DROP{{/inline}}{{#each vlans}}{{> drop}}{{/each}}\n',
    '{{!-- }} {{#each}} --}}\n-j ACCEPT\n',
    '\\{{literal}} is not a tag: -j ACCEPT\n',
  ]) {
    t.is(templateSyntaxProblem(source, 'filter/forward.hbs'), undefined, source);
  }
});
