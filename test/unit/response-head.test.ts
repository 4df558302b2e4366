import test from 'ava';
import { responseFacts, responseHead } from '../../src/http/response-head.js';

const head = (raw: string[], decoded = false): string => responseHead(200, 'OK', raw, responseFacts(raw), undefined, decoded, 'raw', true, false);

test('fields the Connection header names are dropped whatever their length or case; the others are kept as sent', (t) => {
  const raw = [
    'Server',
    'nginx',
    'Connection',
    'X-Private-Thing, X-A, x-some-very-long-field-name-over-32',
    'X-PRIVATE-thing',
    'one',
    'x-a',
    'two',
    'X-Some-Very-Long-Field-Name-Over-32',
    'three',
    'Content-Type',
    'text/plain',
    'Content-Length',
    '3',
  ];
  t.is(head(raw), 'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n');
});

test('hop-by-hop fields are dropped in any case; a decoded body loses its Content-Encoding and Content-Length', (t) => {
  const raw = ['KEEP-ALIVE', 'timeout=5', 'Te', 'x', 'Proxy-Authenticate', 'Basic', 'Content-Encoding', 'gzip', 'Content-Length', '10', 'Date', 'today'];
  t.is(head(raw), 'HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\nDate: today\r\n\r\n');
  t.is(head(raw, true), 'HTTP/1.1 200 OK\r\nDate: today\r\n\r\n');
});
