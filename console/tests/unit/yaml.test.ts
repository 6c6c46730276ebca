import { describe, expect, it } from 'vitest';

import { lineOf, ruleIdOf, toYaml, withEnabled } from '../../src/yaml';

// The expected texts below were read back with a YAML parser (PyYAML) when written: each
// gives the same value as the JSON it came from.

describe('toYaml', () => {
  it('writes a rule as block YAML, quoting only what a parser would misread', () => {
    const rule = {
      id: 'smoke-alarm',
      kind: 'match',
      when: 'event.kind == "smoke" && event.attrs.alarm == true',
      severity: 'medium',
      category: 'fire.smoke',
      enabled: false,
      window: 300,
      tags: ['fire', 'yes', 'null', '007'],
      empty: {},
      none: [],
    };
    expect(toYaml(rule)).toBe(
      [
        'id: smoke-alarm',
        'kind: match',
        'when: "event.kind == \\"smoke\\" && event.attrs.alarm == true"',
        'severity: medium',
        'category: fire.smoke',
        'enabled: false',
        'window: 300',
        // YAML 1.1 reads yes as true, null as null and 007 as a number: they stay strings.
        'tags: [fire, "yes", "null", "007"]',
        'empty: {}',
        'none: []',
        '',
      ].join('\n'),
    );
  });

  it('quotes keys that read as booleans or null', () => {
    expect(toYaml({ n: 1, yes: 'no', '': null, 'two words': true })).toBe('"n": 1\n"yes": "no"\n"": null\n"two words": true\n');
  });

  it('writes multi-line text as a literal block that keeps or strips the final newline', () => {
    expect(toYaml({ message: 'line one\nline two\n', note: 'a\n\nb' })).toBe('message: |\n  line one\n  line two\nnote: |-\n  a\n\n  b\n');
  });

  it('quotes multi-line text a literal block would change (leading or trailing blanks)', () => {
    expect(toYaml({ lead: ' x\ny', trail: 'x \ny', crlf: 'x\r\ny', blank: 'x\n\n' })).toBe(
      'lead: " x\\ny"\ntrail: "x \\ny"\ncrlf: "x\\r\\ny"\nblank: "x\\n\\n"\n',
    );
  });

  it('nests maps and lists by two spaces, items of a list under their dash', () => {
    const value = { steps: [{ kind: 'count', n: 3, where: { grid: 'g1' } }, 'plain', [1, 2]], deep: { text: 'multi\nline' } };
    expect(toYaml(value)).toBe(
      ['steps:', '  - kind: count', '    "n": 3', '    where:', '      grid: g1', '  - plain', '  - - 1', '    - 2', 'deep:', '  text: |-', '    multi', '    line', ''].join('\n'),
    );
  });

  it('writes a long list of scalars one item a line rather than on one long line', () => {
    const long = Array.from({ length: 20 }, (_, i) => `item${i}`);
    const text = toYaml({ long });
    expect(text.split('\n')).toHaveLength(22);
    expect(text.startsWith('long:\n  - item0\n  - item1\n')).toBe(true);
    expect(toYaml({ short: ['a', 'b'] })).toBe('short: [a, b]\n');
  });

  it('writes a bare value on one line', () => {
    expect(toYaml('two words')).toBe('"two words"\n');
    expect(toYaml(42)).toBe('42\n');
    expect(toYaml(null)).toBe('null\n');
    expect(toYaml([])).toBe('[]\n');
    expect(toYaml({})).toBe('{}\n');
  });
});

describe('withEnabled', () => {
  it('changes the top-level line and keeps its comment', () => {
    const text = 'id: r\nenabled: true  # on since May\nkind: match\n';
    expect(withEnabled(text, false)).toBe('id: r\nenabled: false  # on since May\nkind: match\n');
  });

  it('fills in an empty value', () => {
    expect(withEnabled('id: r\nenabled:\n', true)).toBe('id: r\nenabled: true\n');
  });

  it('leaves nested and look-alike keys alone and adds a top-level line', () => {
    const text = 'id: r\nsteps:\n  - enabled: false\nenabled_until: 2030\n\n\n';
    expect(withEnabled(text, true)).toBe('id: r\nsteps:\n  - enabled: false\nenabled_until: 2030\nenabled: true\n');
  });

  it('keeps Windows line endings', () => {
    expect(withEnabled('id: r\r\nenabled: false\r\nkind: m\r\n', true)).toBe('id: r\r\nenabled: true\r\nkind: m\r\n');
  });

  it('sets the field of a rule written as JSON', () => {
    const out = withEnabled('{"id": "r", "enabled": false, "kind": "match"}', true);
    expect(JSON.parse(out)).toEqual({ id: 'r', enabled: true, kind: 'match' });
    expect(out.endsWith('}\n')).toBe(true);
  });
});

describe('ruleIdOf', () => {
  it('reads the top-level id, plain or quoted, with a comment after it', () => {
    expect(ruleIdOf('kind: match\nid: smoke-alarm  # the id\n')).toBe('smoke-alarm');
    expect(ruleIdOf("id: 'speed.a1'\n")).toBe('speed.a1');
    expect(ruleIdOf('id: "speed.a1"\n')).toBe('speed.a1');
  });

  it('is null without a top-level id', () => {
    expect(ruleIdOf('kind: match\nsteps:\n  - id: inner\n')).toBeNull();
    expect(ruleIdOf('id:\nkind: match\n')).toBeNull();
    expect(ruleIdOf('')).toBeNull();
  });

  it('reads the id of a rule written as JSON, and nothing from broken JSON', () => {
    expect(ruleIdOf('  {"id": "r-1", "kind": "match"}')).toBe('r-1');
    expect(ruleIdOf('{"id": 5}')).toBeNull();
    expect(ruleIdOf('{"id": ""}')).toBeNull();
    expect(ruleIdOf('{"id": "r-1"')).toBeNull();
  });
});

describe('lineOf', () => {
  it('finds the line a node message names', () => {
    expect(lineOf('line 8, rule `typo`: unknown field `limt_kmh`')).toBe(8);
    expect(lineOf('invalid type: string "x", expected u32 at line 3 column 5')).toBe(3);
    expect(lineOf('Line 12: bad indentation')).toBe(12);
  });

  // A bad `when` names the rule's line first and the expression's own line after it.
  it('takes the first line named: the rule text, not the expression inside it', () => {
    expect(lineOf("line 9, rule `broken`, key `when`: line 1, column 24: expected an expression after '&&'")).toBe(9);
  });

  it('reads a Chinese message', () => {
    expect(lineOf('第 7 行：缩进错误')).toBe(7);
    expect(lineOf('第7行')).toBe(7);
  });

  it('is null when no line is named', () => {
    expect(lineOf('rule `r` is not valid')).toBeNull();
    expect(lineOf('pipeline 3 failed')).toBeNull();
    expect(lineOf('line 0')).toBeNull();
    expect(lineOf('lines 3 to 5')).toBeNull();
  });
});
