import test from 'ava';
import { FORBIDDEN_UPSTREAM, cidrContains, inAny, parseCidr, parseHostPort, parseIp, type Cidr } from '../../src/util/ip.js';
import { AddressGuard } from '../../src/upstream/address-guard.js';

function cidr(text: string): Cidr {
  const c = parseCidr(text);
  if ('error' in c) throw new Error(c.error);
  return c;
}

function ip(text: string): { family: 4 | 6; value: bigint } {
  const v = parseIp(text);
  if (!v) throw new Error(`not an IP: ${text}`);
  return v;
}

test('parseIp: IPv4', (t) => {
  t.deepEqual(parseIp('10.77.1.2'), { family: 4, value: 0x0a4d0102n });
  t.deepEqual(parseIp('0.0.0.0'), { family: 4, value: 0n });
  t.deepEqual(parseIp('255.255.255.255'), { family: 4, value: 0xffffffffn });
});

test('parseIp: IPv6 forms', (t) => {
  t.deepEqual(parseIp('::'), { family: 6, value: 0n });
  t.deepEqual(parseIp('::1'), { family: 6, value: 1n });
  t.deepEqual(parseIp('fd77:1::2'), { family: 6, value: (0xfd77n << 112n) | (1n << 96n) | 2n });
  t.deepEqual(parseIp('2001:db8::'), { family: 6, value: (0x2001n << 112n) | (0xdb8n << 96n) });
  t.deepEqual(parseIp('1:2:3:4:5:6:7:8'), { family: 6, value: 0x00010002000300040005000600070008n });
  t.deepEqual(parseIp('FE80::1%eth0'), { family: 6, value: (0xfe80n << 112n) | 1n }, 'zone id dropped, case ignored');
  // IPv4-compatible (deprecated, RFC 4291 §2.5.5.1) stays IPv6.
  t.deepEqual(parseIp('::10.0.0.1'), { family: 6, value: 0x0a000001n });
});

test('parseIp: IPv4-mapped IPv6 in every spelling folds to the IPv4 address (RFC 4291 §2.5.5.2)', (t) => {
  for (const text of ['::ffff:10.0.0.1', '::FFFF:10.0.0.1', '::ffff:a00:1', '0:0:0:0:0:ffff:0a00:0001', '0::ffff:10.0.0.1']) {
    t.deepEqual(parseIp(text), { family: 4, value: 0x0a000001n }, text);
  }
});

test('parseIp: not addresses', (t) => {
  for (const text of ['', 'localhost', '10.0.0', '10.0.0.256', '010.0.0.1', '1.2.3.4.5', ':::1', '1::2::3', '[::1]', '10.0.0.1/8']) {
    t.is(parseIp(text), undefined, text);
  }
});

test('parseCidr: valid networks, bare addresses as host routes', (t) => {
  t.like(cidr('10.77.0.0/16'), { family: 4, base: 0x0a4d0000n, bits: 16, text: '10.77.0.0/16' });
  t.like(cidr('10.77.1.2'), { family: 4, bits: 32 });
  t.like(cidr('0.0.0.0/0'), { family: 4, base: 0n, bits: 0 });
  t.like(cidr('fc00::/7'), { family: 6, bits: 7 });
  t.like(cidr('::1'), { family: 6, bits: 128 });
});

test('parseCidr: errors', (t) => {
  const err = (text: string): string => {
    const c = parseCidr(text);
    return 'error' in c ? c.error : 'ok';
  };
  t.regex(err('10.77.1.0/33'), /invalid prefix length/);
  t.regex(err('fd00::/129'), /invalid prefix length/);
  t.regex(err('10.77.1.0/'), /invalid prefix length/);
  t.regex(err('10.77.1.0/-1'), /invalid prefix length/);
  t.regex(err('10.77.1.0/2x'), /invalid prefix length/);
  t.regex(err('10.77.1.0/024'), /invalid prefix length/);
  t.like(cidr('0.0.0.0/0'), { bits: 0 });
  t.regex(err('10.77.1.5/24'), /host bits set/);
  t.regex(err('fd00::1/64'), /host bits set/);
  t.regex(err('10.77.1.300/24'), /not an IP address or CIDR/);
  t.regex(err('nope/8'), /not an IP address or CIDR/);
});

test('cidrContains: boundaries, /0, /32, families never mix', (t) => {
  const c = cidr('10.77.1.0/24');
  t.true(cidrContains(c, ip('10.77.1.0')));
  t.true(cidrContains(c, ip('10.77.1.255')));
  t.false(cidrContains(c, ip('10.77.0.255')));
  t.false(cidrContains(c, ip('10.77.2.0')));
  t.true(cidrContains(cidr('0.0.0.0/0'), ip('203.0.113.9')));
  t.false(cidrContains(cidr('0.0.0.0/0'), ip('::1')), 'an IPv4 /0 does not cover IPv6');
  t.true(cidrContains(cidr('10.77.1.2/32'), ip('10.77.1.2')));
  t.false(cidrContains(cidr('10.77.1.2/32'), ip('10.77.1.3')));
  t.true(cidrContains(cidr('fd77::/16'), ip('fd77:1::2')));
  t.false(cidrContains(cidr('fd77::/16'), ip('fd78::2')));
  t.true(cidrContains(c, ip('::ffff:10.77.1.9')), 'a mapped address is tested as IPv4');
});

test('FORBIDDEN_UPSTREAM: metadata, loopback, private, ULA, CGNAT, mapped private are all forbidden', (t) => {
  for (const text of [
    '169.254.169.254',
    '127.0.0.1',
    '127.255.255.254',
    '::1',
    'fd00::1',
    '100.64.0.1',
    '::ffff:10.0.0.1',
    '::ffff:169.254.169.254',
    '::ffff:127.0.0.1',
    '10.0.0.1',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '0.0.0.0',
    '::',
    'fe80::1',
    '224.0.0.1',
    'ff02::1',
    '255.255.255.255',
    '240.0.0.1',
    '198.18.0.1',
    '192.0.2.1',
    '2001:db8::1',
    '64:ff9b::a00:1',
    '2002:a00:1::1',
    '::10.0.0.1',
    '::169.254.169.254',
  ]) {
    t.truthy(inAny(FORBIDDEN_UPSTREAM, ip(text)), text);
  }
});

test('FORBIDDEN_UPSTREAM: ordinary public addresses are not', (t) => {
  for (const text of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '169.255.0.1', '11.0.0.1', '2606:4700::1111', '::ffff:8.8.8.8']) {
    t.is(inAny(FORBIDDEN_UPSTREAM, ip(text)), undefined, text);
  }
});

test('AddressGuard: refuses forbidden ranges, naming the range', (t) => {
  const g = new AddressGuard([]);
  t.is(g.check('169.254.169.254'), 'upstream address 169.254.169.254 is in 169.254.0.0/16, a range not allowed (upstream.allowPrivate)');
  t.regex(g.check('10.77.2.2') ?? '', /10\.0\.0\.0\/8/);
  t.regex(g.check('::ffff:10.77.2.2') ?? '', /10\.0\.0\.0\/8/);
  t.regex(g.check('fd77:2::2') ?? '', /fc00::\/7/);
  t.regex(g.check('not-an-ip') ?? '', /not an IP address/);
  t.regex(g.check('::1') ?? '', /in ::1\/128/);
  t.regex(g.check('::127.0.0.1') ?? '', /in ::\/96/, 'IPv4-compatible form (sit tunnels it to IPv4)');
  t.is(g.check('8.8.8.8'), undefined);
});

test('AddressGuard with allowPrivate: only the listed ranges open up', (t) => {
  const g = new AddressGuard(['10.77.2.0/24', 'fd77:2::/64']);
  t.is(g.check('10.77.2.2'), undefined);
  t.is(g.check('::ffff:10.77.2.2'), undefined, 'the mapped form of an allowed address is allowed too');
  t.regex(g.check('10.77.3.2') ?? '', /10\.0\.0\.0\/8/, 'the rest of 10/8 stays forbidden');
  t.is(g.check('fd77:2::2'), undefined);
  t.regex(g.check('fd77:3::2') ?? '', /fc00::\/7/);
  t.regex(g.check('169.254.169.254') ?? '', /169\.254/);
  t.regex(g.check('127.0.0.1') ?? '', /127\.0\.0\.0\/8/);
  t.is(g.check('8.8.8.8'), undefined);
});

test('AddressGuard: allowing a wide range does not open loopback or metadata unless listed', (t) => {
  const g = new AddressGuard(['10.0.0.0/8', '192.168.0.0/16']);
  t.is(g.check('10.1.2.3'), undefined);
  t.truthy(g.check('127.0.0.1'));
  t.truthy(g.check('169.254.169.254'));
  t.truthy(g.check('100.64.0.1'));
});

test('parseHostPort', (t) => {
  t.deepEqual(parseHostPort('10.78.0.2:53', 53), { host: '10.78.0.2', port: 53 });
  t.deepEqual(parseHostPort('10.78.0.2', 53), { host: '10.78.0.2', port: 53 });
  t.deepEqual(parseHostPort('[fd00::1]:5353', 53), { host: 'fd00::1', port: 5353 });
  t.deepEqual(parseHostPort('[fd00::1]', 53), { host: 'fd00::1', port: 53 });
  t.deepEqual(parseHostPort('fd00::1', 53), { host: 'fd00::1', port: 53 });
  for (const bad of ['dns.example:53', '10.78.0.2:0', '10.78.0.2:65536', '10.78.0.2:', '[fd00::1]:x', '']) {
    t.is(parseHostPort(bad, 53), undefined, bad);
  }
});
