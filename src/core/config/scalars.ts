/** The convict load of the scalar sections (agent, bgp scalars, routing): defaults, env overrides, per-key checks. */
import convict from 'convict';
import { Problems, messagesOf } from './problems.js';
import { SCHEMA, isLeaf, mapping, type Tree } from './schema.js';

export type { Get } from './problems.js';

// ---------------------------------------------------------------------------------------------------------------------
// The scalar sections through convict

export const LEAF_FORMAT = 'vipcast-config-leaf';
// A named format (no coercion: convict would parseFloat a string for a key with a number default, and read "yes" as
// true); each leaf carries its own check.
convict.addFormat({ name: LEAF_FORMAT, validate: (value: unknown, schema: convict.SchemaObj) => schema.check(value) });

export interface Scalars {
  /** Parsed values by key path ('agent.rise'); absent = unset with no default. */
  readonly values: Map<string, unknown>;
}

export function loadScalars(sections: Record<string, Record<string, unknown>>, env: NodeJS.ProcessEnv, problems: Problems): Scalars {
  const values = new Map<string, unknown>();
  const recorded = problems.list.length;
  // Only non-empty variables count: an empty CONSUL_TOKEN must not wipe the file's token.
  const setEnv: Record<string, string> = {};
  const build = (tree: Tree, prefix: string): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [key, node] of Object.entries(tree)) {
      const keyPath = prefix + key;
      if (!isLeaf(node)) {
        out[key] = build(node, `${keyPath}.`);
        continue;
      }
      if (node.env && env[node.env]) setEnv[node.env] = env[node.env]!;
      const shown = node.env && setEnv[node.env] !== undefined ? `${keyPath} (from $${node.env})` : keyPath;
      out[key] = {
        doc: node.doc,
        default: node.default,
        format: LEAF_FORMAT,
        ...(node.env ? { env: node.env } : {}),
        ...(node.sensitive ? { sensitive: true } : {}),
        check: (value: unknown) => {
          try {
            values.set(keyPath, node.parse(value, shown));
          } catch (err) {
            problems.list.push(...messagesOf(err, shown));
            throw err;
          }
        },
      };
    }
    return out;
  };
  const schema = build(SCHEMA, '');

  // Mappings where a scalar belongs would make convict recurse into a leaf: report and drop them here.
  const input: Record<string, unknown> = {};
  const strip = (tree: Tree, from: Record<string, unknown>, prefix: string): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(from)) {
      const node = tree[key];
      if (!node) continue;
      if (isLeaf(node)) {
        if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
          problems.add(prefix + key, key === 'communities' ? 'is a mapping, not a list (write ["65000:100"])' : 'is a mapping, not a single value');
        } else out[key] = value;
      } else {
        const sub = mapping(value, prefix + key, prefix + key, problems);
        if (sub) out[key] = strip(node, sub, `${prefix}${key}.`);
      }
    }
    return out;
  };
  for (const [name, section] of Object.entries(sections)) input[name] = strip(SCHEMA[name] as Tree, section, `${name}.`);

  const conf = convict<Record<string, unknown>>(schema as convict.Schema<Record<string, unknown>>, { env: setEnv, args: [] });
  conf.load(input);
  try {
    conf.validate({ allowed: 'strict', output: () => undefined });
  } catch (err) {
    // Our checks already recorded their own messages; anything else from convict is re-worded with its key path.
    if (problems.list.length === recorded) {
      for (const line of String((err as Error).message).split('\n')) {
        const m = /configuration param '([^']+)' (not declared|missing)/.exec(line);
        if (m) problems.add(m[1]!, m[2] === 'missing' ? 'missing' : 'unknown key');
        else problems.list.push(line.replace(/: value was .*$/, ''));
      }
    }
  }
  return { values };
}
