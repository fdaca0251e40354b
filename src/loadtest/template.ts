/**
 * Scenario templates: `{{ path.to.value }}` placeholders in strings, resolved
 * against a context object. A string that is exactly one placeholder yields
 * the value itself (a number stays a number); otherwise values are joined as
 * text. Templates are compiled once, when the scenario is loaded, because they
 * run for every request and every received message.
 */

export type Context = Record<string, unknown>;
export type Render = (context: Context) => unknown;

const PLACEHOLDER = /\{\{\s*([A-Za-z_$][\w$]*(?:\.[\w$]+)*)\s*\}\}/g;

/** Reads `a.b.c` from an object; undefined when any step is missing. */
export function lookup(context: unknown, path: readonly string[]): unknown {
  let value: unknown = context;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/** The placeholder paths a template string uses (for validation). */
export function placeholdersOf(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

function compileString(template: string): Render {
  const parts: (string | string[])[] = [];
  let last = 0;
  for (const match of template.matchAll(PLACEHOLDER)) {
    if (match.index! > last) parts.push(template.slice(last, match.index));
    parts.push(match[1]!.split('.'));
    last = match.index! + match[0].length;
  }
  if (last < template.length) parts.push(template.slice(last));
  if (parts.length === 0) return () => '';
  if (parts.length === 1) {
    const only = parts[0]!;
    if (typeof only === 'string') return () => only;
    return (context) => lookup(context, only);
  }
  return (context) => {
    let out = '';
    for (const part of parts) {
      if (typeof part === 'string') out += part;
      else {
        const value = lookup(context, part);
        out += value === undefined || value === null ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value);
      }
    }
    return out;
  };
}

/** Compiles a JSON-like value whose strings may hold placeholders. */
export function compileTemplate(value: unknown): Render {
  if (typeof value === 'string') return compileString(value);
  if (Array.isArray(value)) {
    const items = value.map(compileTemplate);
    return (context) => items.map((item) => item(context));
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).map(([k, v]) => [k, compileTemplate(v)] as const);
    return (context) => {
      const out: Record<string, unknown> = {};
      for (const [k, render] of entries) out[k] = render(context);
      return out;
    };
  }
  return () => value;
}

/** Compiles a template that must render to text (URLs, keys, header values). */
export function compileText(template: string): (context: Context) => string {
  const render = compileString(template);
  return (context) => {
    const value = render(context);
    return value === undefined || value === null ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value);
  };
}
