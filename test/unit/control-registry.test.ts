import test from 'ava';
import { parseConfig } from '../../src/config/load.js';
import { conflict, findConflict, ifacesIntersect, strictlyNarrower, cidrsIntersect } from '../../src/control/overlap.js';
import { parseBody, planAdd, planRemove, planUpdate, reloadConflict, type RegistryState } from '../../src/control/registry.js';
import { compilePolicies } from '../../src/policy/policy.js';
import { SandboxTable, type SandboxSpec } from '../../src/policy/sandboxes.js';

const CONFIG = parseConfig(
  `sandboxes:
  - name: agent
    interface: sbx-sbx
    cidr: 10.77.1.0/24
    policy: default
  - name: fallback
    interface: "sbx-*"
    policy: none
policies:
  default:
    allow:
      - host: api.example.test
  none: {}
`,
  'c.yaml',
);

const state = (dynamic: SandboxSpec[] = []): RegistryState => ({ config: CONFIG, dynamic });

function added(s: RegistryState, body: Record<string, unknown>): RegistryState {
  const o = planAdd(s, body);
  if (!o.ok) throw new Error(o.error);
  return { config: s.config, dynamic: o.value.next };
}

function refused(s: RegistryState, body: Record<string, unknown>): { status: number; error: string } {
  const o = planAdd(s, body);
  if (o.ok) throw new Error(`accepted: ${JSON.stringify(body)}`);
  return o;
}

/* ------------------------------------ overlap ------------------------------------ */

test('interface patterns: a trailing * is a prefix, as in nft iifname', (t) => {
  t.true(ifacesIntersect('sbx-*', 'sbx-two'));
  t.true(ifacesIntersect('sbx-two', 'sbx-*'));
  t.true(ifacesIntersect('sbx-*', 'sbx-t*'));
  t.true(ifacesIntersect('sbx-two', 'sbx-two'));
  t.false(ifacesIntersect('sbx-two', 'sbx-tw'));
  t.false(ifacesIntersect('sbx-a*', 'sbx-b*'));
  t.true(strictlyNarrower('sbx-two', 'sbx-*'));
  t.true(strictlyNarrower('sbx-t*', 'sbx-*'));
  t.false(strictlyNarrower('sbx-*', 'sbx-*'));
  t.false(strictlyNarrower('sbx-*', 'sbx-two'));
  t.false(strictlyNarrower('sbx-two', 'sbx-two'));
  t.false(strictlyNarrower('up-a', 'sbx-*'));
});

test('cidrs intersect when one contains the other', (t) => {
  t.true(cidrsIntersect('10.77.1.0/24', '10.77.1.7/32'));
  t.true(cidrsIntersect('10.77.0.0/16', '10.77.1.0/24'));
  t.false(cidrsIntersect('10.77.1.0/25', '10.77.1.128/25'));
  t.false(cidrsIntersect('10.77.1.0/24', 'nonsense'));
});

test('conflict: cidr overlap is refused unless their interfaces tell them apart', (t) => {
  t.regex(
    conflict({ name: 'x', cidr: '10.77.1.0/25' }, { name: 'a', interface: 'sbx-a', cidr: '10.77.1.0/24' }, false) ?? '',
    /cidr 10\.77\.1\.0\/25 overlaps cidr 10\.77\.1\.0\/24 of sandbox "a" \(from the config\)/,
  );
  t.is(conflict({ name: 'x', interface: 'sbx-b', cidr: '10.77.1.0/25' }, { name: 'a', interface: 'sbx-a', cidr: '10.77.1.0/24' }, false), undefined);
  t.is(conflict({ name: 'x', cidr: '10.77.2.0/24' }, { name: 'a', cidr: '10.77.1.0/24' }, true), undefined);
});

test('conflict: interfaces may only carve a narrower one out of a config glob', (t) => {
  t.is(conflict({ name: 'x', interface: 'sbx-two' }, { name: 'f', interface: 'sbx-*' }, false), undefined, 'carve-out of the config glob');
  t.regex(conflict({ name: 'x', interface: 'sbx-*' }, { name: 'f', interface: 'sbx-*' }, false) ?? '', /overlaps interface "sbx-\*"/);
  t.regex(
    conflict({ name: 'x', interface: 'sbx-s*' }, { name: 'a', interface: 'sbx-sbx', cidr: '10.77.1.0/24' }, false) ?? '',
    /overlaps interface "sbx-sbx" of sandbox "a"/,
  );
  t.regex(
    conflict({ name: 'x', interface: 'sbx-two' }, { name: 'y', interface: 'sbx-*' }, true) ?? '',
    /of sandbox "y"$/,
    'no carve-outs among registered ones',
  );
  // Registered ones on the same interface with disjoint cidrs: fine; on merely intersecting patterns: not.
  t.is(conflict({ name: 'x', interface: 'tap0', cidr: '10.9.1.0/24' }, { name: 'y', interface: 'tap0', cidr: '10.9.2.0/24' }, true), undefined);
  t.regex(
    conflict({ name: 'x', interface: 'tap*', cidr: '10.9.1.0/24' }, { name: 'y', interface: 'tap0', cidr: '10.9.2.0/24' }, true) ?? '',
    /interface "tap\*" overlaps interface "tap0"/,
  );
  t.regex(conflict({ name: 'x', interface: 'tap0' }, { name: 'y', interface: 'tap0', cidr: '10.9.2.0/24' }, true) ?? '', /interface "tap0" overlaps/);
});

test('conflict: an interface-only sandbox and a cidr-only one are not compared', (t) => {
  t.is(conflict({ name: 'x', cidr: '10.77.4.2/32' }, { name: 'f', interface: 'sbx-*' }, false), undefined);
  t.is(conflict({ name: 'x', interface: 'sbx-two' }, { name: 'c', cidr: '10.0.0.0/8' }, true), undefined);
});

test("findConflict skips the candidate's own name among registered ones (updates)", (t) => {
  const me = { name: 'x', cidr: '10.9.0.0/24' };
  t.is(findConflict(me, [me], []), undefined);
  t.regex(findConflict(me, [{ name: 'y', cidr: '10.9.0.128/25' }], []) ?? '', /of sandbox "y"$/);
});

/* ------------------------------------ registry ------------------------------------ */

test('parseBody: JSON objects only, one sentence otherwise', (t) => {
  t.deepEqual(parseBody('{"a":1}'), { ok: true, value: { a: 1 } });
  t.like(parseBody('{"a":'), { ok: false, status: 400 });
  t.regex((parseBody('{"a":') as { error: string }).error, /^the request body is not valid JSON \(.+\)$/);
  t.regex((parseBody('') as { error: string }).error, /empty/);
  t.regex((parseBody('"x"') as { error: string }).error, /must be a JSON object/);
  t.regex((parseBody('null') as { error: string }).error, /must be a JSON object/);
});

test("planAdd: the config's rules, address as a /32, labels kept frozen", (t) => {
  const o = planAdd(state(), { name: 'two', interface: 'sbx-two', address: '10.77.4.2', policy: 'default', user: 'bob', labels: { team: 'x' } });
  if (!o.ok) {
    t.fail(o.error);
    return;
  }
  t.deepEqual(o.value.spec, { name: 'two', policy: 'default', interface: 'sbx-two', cidr: '10.77.4.2/32', user: 'bob', labels: { team: 'x' } });
  t.true(Object.isFrozen(o.value.spec));
  t.deepEqual(o.value.next, [o.value.spec]);
});

test('planAdd refuses with 400 what the config would refuse, and 409 what clashes', (t) => {
  const s = added(state(), { name: 'two', interface: 'sbx-two', policy: 'default' });
  const cases: [Record<string, unknown>, number, RegExp][] = [
    [{ name: 'x', address: '10.77.9.2', policy: 'nope' }, 400, /^policy: unknown policy "nope"/],
    [{ name: 'x', address: '10.77.9.2', policy: 'constructor' }, 400, /^policy: unknown policy "constructor"/],
    [{ name: 'x', cidr: '10.77.9.1/24', policy: 'default' }, 400, /^cidr: .*host bits set/],
    [{ name: 'x', cidr: 'fd00::/64', policy: 'default' }, 400, /^cidr: must be an IPv4 CIDR/],
    [{ name: 'x', address: '::1', policy: 'default' }, 400, /^address: must be an IPv4 address/],
    [{ name: 'x', interface: '*', policy: 'default' }, 400, /^interface: /],
    [{ name: 'x', interface: 5, policy: 'default' }, 400, /^interface: must be a non-empty string/],
    [{ name: 'x/y', address: '10.77.9.2', policy: 'default' }, 400, /^name: /],
    [{ address: '10.77.9.2', policy: 'default' }, 400, /missing required key "name"/],
    [{ name: 'x', policy: 'default' }, 400, /needs "interface" or "cidr"/],
    [{ name: 'x', address: '10.77.9.2', policy: 'default', user: '' }, 400, /^user: /],
    [{ name: 'x', address: '10.77.9.2', policy: 'default', labels: [] }, 400, /^labels: must be an object/],
    [{ name: 'x', address: '10.77.9.2', policy: 'default', labels: { k: 1 } }, 400, /^labels\.k: must be a string/],
    [{ name: 'x', address: '10.77.9.2', policy: 'default', extra: 1 }, 400, /^unknown key "extra"/],
    [{ name: 'agent', address: '10.77.9.2', policy: 'default' }, 409, /already exists \(from the config\)/],
    [{ name: 'two', address: '10.77.9.2', policy: 'default' }, 409, /already registered/],
    [{ name: 'x', address: '10.77.1.9', policy: 'default' }, 409, /overlaps cidr 10\.77\.1\.0\/24 of sandbox "agent"/],
    [{ name: 'x', interface: 'sbx-two', policy: 'default' }, 409, /overlaps interface "sbx-two" of sandbox "two"/],
  ];
  for (const [body, status, re] of cases) {
    const r = refused(s, body);
    t.is(r.status, status, JSON.stringify(body));
    t.regex(r.error, re, JSON.stringify(body));
  }
});

test('planUpdate: fields replace, a new match replaces the whole match, null removes user and labels', (t) => {
  const s = added(state(), { name: 'two', interface: 'sbx-two', cidr: '10.77.4.0/24', policy: 'default', user: 'bob', labels: { a: '1' } });
  const u = planUpdate(s, 'two', { address: '10.77.5.2', user: null, labels: null });
  if (!u.ok) {
    t.fail(u.error);
    return;
  }
  t.deepEqual(u.value.spec, { name: 'two', policy: 'default', cidr: '10.77.5.2/32' });
  t.is(u.value.before, s.dynamic[0] as SandboxSpec);
  const p = planUpdate(s, 'two', { policy: 'none' });
  if (!p.ok) {
    t.fail(p.error);
    return;
  }
  t.deepEqual(p.value.spec, { name: 'two', policy: 'none', interface: 'sbx-two', cidr: '10.77.4.0/24', user: 'bob', labels: { a: '1' } });
  t.like(planUpdate(s, 'ghost', {}), { ok: false, status: 404 });
  t.like(planUpdate(s, 'agent', {}), { ok: false, status: 409 });
  t.like(planUpdate(s, 'two', { name: 'three' }), { ok: false, status: 400 });
  t.like(planUpdate(s, 'two', { policy: 'nope' }), { ok: false, status: 400 });
});

test("planRemove: registered only; the config's are 409, unknown 404", (t) => {
  const s = added(state(), { name: 'two', interface: 'sbx-two', policy: 'default' });
  const r = planRemove(s, 'two');
  t.true(r.ok && r.value.next.length === 0);
  t.like(planRemove(s, 'agent'), { ok: false, status: 409 });
  t.regex((planRemove(s, 'agent') as { error: string }).error, /comes from the config file/);
  t.like(planRemove(s, 'ghost'), { ok: false, status: 404 });
});

test("reloadConflict: a new config must keep the registered sandboxes' policies, names and room", (t) => {
  const dyn = added(state(), { name: 'two', interface: 'sbx-two', cidr: '10.77.4.0/24', policy: 'default' }).dynamic;
  t.is(reloadConflict(CONFIG, dyn), undefined);
  const noPolicy = parseConfig('sandboxes: [{name: agent, cidr: 10.77.1.0/24, policy: other}]\npolicies: {other: {}}\n', 'c.yaml');
  t.regex(reloadConflict(noPolicy, dyn) ?? '', /uses policy "default", which the new config does not have/);
  const sameName = parseConfig('sandboxes: [{name: two, cidr: 10.77.9.0/24, policy: default}]\npolicies: {default: {}}\n', 'c.yaml');
  t.regex(reloadConflict(sameName, dyn) ?? '', /names a sandbox "two"/);
  const wide = parseConfig('sandboxes: [{name: wide, cidr: 10.77.0.0/16, policy: default}]\npolicies: {default: {}}\n', 'c.yaml');
  t.regex(reloadConflict(wide, dyn) ?? '', /registered sandbox "two": cidr 10\.77\.4\.0\/24 overlaps/);
});

/* ------------------------- identification with registered ones ------------------------- */

test('SandboxTable: registered sandboxes first (pair, interface, address), then the config in order', (t) => {
  const policies = compilePolicies(CONFIG).byName;
  let s = state();
  for (const b of [
    { name: 'pair', interface: 'tap0', cidr: '10.9.1.0/24', policy: 'default' },
    { name: 'pair2', interface: 'tap0', cidr: '10.9.2.0/24', policy: 'default' },
    { name: 'glob', interface: 'vm-*', cidr: '10.9.3.0/24', policy: 'default' },
    { name: 'two', interface: 'sbx-two', policy: 'default' },
    { name: 'host', address: '10.9.9.9', policy: 'default' },
    { name: 'net', cidr: '10.8.0.0/16', policy: 'default' },
  ])
    s = added(s, b);
  const table = new SandboxTable(CONFIG.sandboxes, policies, s.dynamic);
  t.is(table.identify('10.9.1.5', 'tap0')?.name, 'pair');
  t.is(table.identify('10.9.2.5', 'tap0')?.name, 'pair2');
  t.is(table.identify('10.9.3.5', 'tap0'), undefined, 'a pair needs both');
  t.is(table.identify('10.9.3.5', 'vm-17')?.name, 'glob');
  t.is(table.identify('10.77.4.2', 'sbx-two')?.name, 'two', 'carved out of the config glob');
  t.is(table.identify('10.77.5.2', 'sbx-five')?.name, 'fallback');
  t.is(table.identify('10.77.1.2', 'sbx-sbx')?.name, 'agent');
  t.is(table.identify('10.9.9.9', 'eth7')?.name, 'host');
  t.is(table.identify('10.9.9.9', 'sbx-two')?.name, 'two', 'interface before address');
  t.is(table.identify('10.8.3.4', undefined)?.name, 'net');
  t.is(table.identify('10.10.0.1', 'eth7'), undefined);
  t.is(table.byIface('tap0')?.name, 'pair');
  t.is(table.byIface('sbx-two')?.name, 'two');
  t.is(table.byIface('sbx-x')?.name, 'fallback');
  t.true(table.needsIface);
  t.is(table.byName('two')?.source, 'api');
  t.is(table.byName('agent')?.source, 'config');
  t.deepEqual(
    table.list.map((x) => x.name),
    ['pair', 'pair2', 'glob', 'two', 'host', 'net', 'agent', 'fallback'],
  );
  // Rebuilt with another registry, unchanged ones keep their compiled object.
  const again = new SandboxTable(CONFIG.sandboxes, policies, s.dynamic.slice(1));
  t.is(again.byName('two'), table.byName('two'));
  t.is(again.identify('10.9.1.5', 'tap0'), undefined);
});
