// Just enough YAML for rules: writing a rule's JSON as block-style YAML (for a node that
// does not send the YAML text itself), switching `enabled` in a rule's text, and reading
// its `id`. Parsing YAML stays with the node, which says where a text is wrong.

const PLAIN = /^[A-Za-z_][A-Za-z0-9_./-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|y|n|~)$/i;

function isScalar(value: unknown): boolean {
  return value === null || typeof value !== 'object';
}

function isEmpty(value: unknown): boolean {
  return Array.isArray(value) ? value.length === 0 : !!value && typeof value === 'object' && Object.keys(value).length === 0;
}

/** A scalar on one line: plain when it cannot be misread, else double-quoted (JSON's quoting is valid YAML). */
function scalar(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return PLAIN.test(value) && !RESERVED.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

function inline(value: unknown): string {
  if (Array.isArray(value)) return value.length ? `[${value.map(scalar).join(', ')}]` : '[]';
  if (isEmpty(value)) return '{}';
  return scalar(value);
}

/** A multi-line string as a literal block, when that reads back exactly. */
function literal(value: string, indent: string): string[] | null {
  if (!value.includes('\n') || value.includes('\r') || /^\s/.test(value) || /[ \t]$/m.test(value) || value.endsWith('\n\n')) return null;
  const body = value.endsWith('\n') ? value.slice(0, -1) : value;
  return [value.endsWith('\n') ? '|' : '|-', ...body.split('\n').map((line) => (line ? indent + line : ''))];
}

function block(value: unknown): string[] {
  const lines: string[] = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isScalar(item) || isEmpty(item)) {
        lines.push(`- ${inline(item)}`);
      } else {
        const sub = block(item);
        lines.push(`- ${sub[0]}`, ...sub.slice(1).map((l) => (l ? `  ${l}` : l)));
      }
    }
    return lines;
  }
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    const k = scalar(key);
    if (typeof item === 'string') {
      const lit = literal(item, '  ');
      if (lit) {
        lines.push(`${k}: ${lit[0]}`, ...lit.slice(1));
        continue;
      }
    }
    const flat = Array.isArray(item) && item.every(isScalar) && inline(item).length <= 60;
    if (isScalar(item) || isEmpty(item) || flat) {
      lines.push(`${k}: ${inline(item)}`);
    } else {
      lines.push(`${k}:`, ...block(item).map((l) => (l ? `  ${l}` : l)));
    }
  }
  return lines;
}

/** A JSON value as YAML text. */
export function toYaml(value: unknown): string {
  if (isScalar(value) || isEmpty(value)) return `${inline(value)}\n`;
  return `${block(value).join('\n')}\n`;
}

const ENABLED_LINE = /^enabled:[^\S\n]*[^\s#]*([^\S\n]+#.*)?$/m;

/** The rule's text with `enabled` set: the top-level line changed, or one added. */
export function withEnabled(text: string, enabled: boolean): string {
  if (text.trimStart().startsWith('{')) {
    try {
      const rule = JSON.parse(text) as Record<string, unknown>;
      return `${JSON.stringify({ ...rule, enabled }, null, 2)}\n`;
    } catch {
      // Not JSON after all: treat it as YAML.
    }
  }
  if (ENABLED_LINE.test(text)) return text.replace(ENABLED_LINE, (_line, comment: string | undefined) => `enabled: ${enabled}${comment ?? ''}`);
  return `${text.replace(/\s*$/, '')}\nenabled: ${enabled}\n`;
}

/** The rule's `id` from its text (top level), or null. */
export function ruleIdOf(text: string): string | null {
  if (text.trimStart().startsWith('{')) {
    try {
      const id = (JSON.parse(text) as { id?: unknown }).id;
      return typeof id === 'string' && id ? id : null;
    } catch {
      return null;
    }
  }
  const match = /^id:[^\S\n]*(["']?)([^"'\s#]+)\1[^\S\n]*(#.*)?$/m.exec(text);
  return match ? match[2] : null;
}

/** The line a node's message names (`line 7`), or null. */
export function lineOf(message: string): number | null {
  const match = /\bline (\d+)/i.exec(message) ?? /第\s*(\d+)\s*行/.exec(message);
  const n = match ? Number(match[1]) : NaN;
  return Number.isInteger(n) && n > 0 ? n : null;
}
