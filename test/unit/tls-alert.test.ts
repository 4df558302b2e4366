/** The TLS alert record (src/net/tls-alert.ts), byte for byte (RFC 8446 §5.1, §6). */
import test from 'ava';
import { alertRecord } from '../../src/net/tls-alert.js';

test('an alert is a plaintext record: type 21, version 0x0303, length 2, fatal(2), the description', (t) => {
  t.deepEqual([...alertRecord('access_denied')], [21, 3, 3, 0, 2, 2, 49]);
  t.deepEqual([...alertRecord('unrecognized_name')], [21, 3, 3, 0, 2, 2, 112]);
  t.deepEqual([...alertRecord('decode_error')], [21, 3, 3, 0, 2, 2, 50]);
});
