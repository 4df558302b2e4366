/** render-ipset.ts: the iptables backend's sets of registered sandboxes, as `ipset restore` text (pure). */
import test from 'ava';
import { FirewallError, type SandboxMatch } from '../../src/firewall/plan.js';
import { chainPrefix } from '../../src/firewall/render-iptables.js';
import {
  IPSET_MAX_NAME,
  allIpsets,
  ipsetElements,
  ipsetNames,
  renderIpsetChanges,
  renderIpsetDestroy,
  renderIpsetUp,
} from '../../src/firewall/render-ipset.js';

const A: SandboxMatch = { name: 'a', interface: 'tap0', cidr: '10.9.1.0/24' };
const B: SandboxMatch = { name: 'b', interface: 'tap0', cidr: '10.9.2.0/24' };
const C: SandboxMatch = { name: 'c', interface: 'vm-*' };
const D: SandboxMatch = { name: 'd', cidr: '10.9.9.9/32' };

test('elements: pairs also name their interface (once, per family), globs are wildcard elements, each kind in its own set', (t) => {
  t.deepEqual(ipsetElements([A, B, C, D]), {
    PAIR4: ['10.9.1.0/24,tap0', '10.9.2.0/24,tap0'],
    PAIRIF4: ['0.0.0.0/0,tap0'],
    IF4: ['0.0.0.0/0,vm- wildcard'],
    ADDR4: ['10.9.9.9/32'],
    PAIRIF6: ['::/0,tap0'],
    IF6: ['::/0,vm- wildcard'],
  });
});

test('names: from the table, at most 31 characters even for the longest table the backend takes', (t) => {
  t.deepEqual(ipsetNames('SANDGATE'), {
    PAIR4: 'SANDGATE-PAIR4',
    PAIRIF4: 'SANDGATE-PAIRIF4',
    IF4: 'SANDGATE-IF4',
    ADDR4: 'SANDGATE-ADDR4',
    PAIRIF6: 'SANDGATE-PAIRIF6',
    IF6: 'SANDGATE-IF6',
  });
  const longest = chainPrefix({ table: 'a'.repeat(21) });
  for (const n of allIpsets(longest)) t.true(n.length <= IPSET_MAX_NAME, n);
  t.true(allIpsets('SANDGATE').includes('SANDGATE-PAIRIF6-T'), "a crashed up's temporaries are swept too");
});

test('up: each set created if absent, filled aside and swapped in whole; no dynamic part, no sets', (t) => {
  t.is(renderIpsetUp('SANDGATE', {}), '');
  const text = renderIpsetUp('SANDGATE', { dynamic: [C] });
  t.true(
    text.startsWith(
      [
        'create SANDGATE-PAIR4 hash:net,iface family inet',
        'create SANDGATE-PAIR4-T hash:net,iface family inet',
        'flush SANDGATE-PAIR4-T',
        'swap SANDGATE-PAIR4-T SANDGATE-PAIR4',
        'destroy SANDGATE-PAIR4-T',
      ].join('\n'),
    ),
    text,
  );
  t.true(text.includes('flush SANDGATE-IF4-T\nadd SANDGATE-IF4-T 0.0.0.0/0,vm- wildcard\nswap SANDGATE-IF4-T SANDGATE-IF4\n'));
  t.true(text.includes('create SANDGATE-ADDR4 hash:net family inet\n'));
  t.true(text.includes('create SANDGATE-IF6 hash:net,iface family inet6\n'));
  t.true(text.includes('add SANDGATE-IF6-T ::/0,vm- wildcard\n'));
  t.is(text.split('\n').filter((l) => l.startsWith('swap ')).length, 6);
});

test('changes: adds before deletes (fail closed between lines); a shared pair interface stays while used; del without the flag', (t) => {
  t.is(renderIpsetChanges('SANDGATE', [], [A]), 'add SANDGATE-PAIR4 10.9.1.0/24,tap0\nadd SANDGATE-PAIRIF4 0.0.0.0/0,tap0\nadd SANDGATE-PAIRIF6 ::/0,tap0\n');
  t.is(renderIpsetChanges('SANDGATE', [A], [A, B]), 'add SANDGATE-PAIR4 10.9.2.0/24,tap0\n');
  t.is(renderIpsetChanges('SANDGATE', [A, B], [B]), 'del SANDGATE-PAIR4 10.9.1.0/24,tap0\n');
  t.is(renderIpsetChanges('SANDGATE', [C], []), 'del SANDGATE-IF4 0.0.0.0/0,vm-\ndel SANDGATE-IF6 ::/0,vm-\n');
  t.is(
    renderIpsetChanges('SANDGATE', [{ name: 'x', cidr: '10.9.9.9/32' }], [{ name: 'x', interface: 'sbx-x' }]),
    'add SANDGATE-IF4 0.0.0.0/0,sbx-x\nadd SANDGATE-IF6 ::/0,sbx-x\ndel SANDGATE-ADDR4 10.9.9.9/32\n',
  );
  t.is(renderIpsetChanges('SANDGATE', [A], [A]), '', 'no change, no script');
});

test('changes check what they splice in; destroy names only what it is given', (t) => {
  t.throws(() => renderIpsetChanges('SANDGATE', [], [{ name: 'x', interface: 'a,b' }]), { instanceOf: FirewallError });
  t.throws(() => renderIpsetChanges('SANDGATE', [], [{ name: 'x', interface: 'a\nflush' }]), { instanceOf: FirewallError });
  t.throws(() => renderIpsetChanges('SANDGATE', [], [{ name: 'x', cidr: '10.9.9.9/24' }]), { instanceOf: FirewallError, message: /host bits/ });
  t.throws(() => renderIpsetUp('SANDGATE', { dynamic: [{ name: 'x' }] }), { instanceOf: FirewallError });
  t.is(renderIpsetDestroy([]), '');
  t.is(renderIpsetDestroy(['SANDGATE-IF4', 'SANDGATE-IF4-T']), 'destroy SANDGATE-IF4\ndestroy SANDGATE-IF4-T\n');
});
