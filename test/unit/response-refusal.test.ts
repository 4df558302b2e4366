import test from 'ava';
import { nameCarriesSecret, unrelayableTransferCoding } from '../../src/http/headers.js';
import { addCodings, responseFacts } from '../../src/http/response-head.js';

test('only a single chunked coding (any case, any spacing, over any number of fields) is relayable', (t) => {
  for (const ok of [[], ['chunked'], ['Chunked'], [' CHUNKED '], ['chunked,'], [', chunked']])
    t.is(unrelayableTransferCoding(ok), undefined, JSON.stringify(ok));
  const cases: [string[], string][] = [
    [['gzip, chunked'], 'gzip, chunked'],
    [['gzip', 'chunked'], 'gzip, chunked'],
    [['x-gzip, chunked'], 'x-gzip, chunked'],
    [['deflate, chunked'], 'deflate, chunked'],
    [['compress, chunked'], 'compress, chunked'],
    [['br, chunked'], 'br, chunked'],
    [['GZIP, CHUNKED'], 'gzip, chunked'],
    [['chunked', 'chunked'], 'chunked, chunked'],
    [['identity, chunked'], 'identity, chunked'],
    [['gzip'], 'gzip'],
    [['zstd'], 'zstd'],
    [[''], '(empty)'],
  ];
  for (const [values, named] of cases) t.is(unrelayableTransferCoding(values), named, JSON.stringify(values));
});

test("a secret in a field name is found whatever the case; values are not this check's concern", (t) => {
  const needles = ['Bearer sk-abc123', 'sk-abc123'];
  t.true(nameCarriesSecret(['X-sk-abc123', '1'], needles));
  t.true(nameCarriesSecret(['Content-Type', 'text/plain', 'X-SK-ABC123-Y', '1'], needles));
  t.false(nameCarriesSecret(['X-Echo', 'sk-abc123'], needles));
  t.false(nameCarriesSecret(['X-sk-abc12', '1'], needles));
  t.false(nameCarriesSecret([], needles));
});

test('content codings split over several fields are one list (the last field alone would hide a coding)', (t) => {
  t.is(responseFacts(['Content-Encoding', 'gzip', 'Content-Encoding', 'identity']).encoding, 'gzip, identity');
  t.is(responseFacts(['Content-Encoding', ' GZIP ', 'content-encoding', 'br,']).encoding, 'gzip, br');
  t.is(responseFacts(['Content-Encoding', 'gzip']).encoding, 'gzip');
  t.is(responseFacts([]).encoding, undefined);
  t.is(addCodings(undefined, ' , '), '');
});
