// One loopback check (src/net-trust.ts) for the session's broker URL, HTTP sources and the broker's
// plain-HTTP mode: every spelling of a loopback address counts, nothing else does.
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.js';
import { isLoopback } from '../../src/net-trust.js';
import { resolveOptions, type BrokerOptions } from '../../src/broker/options.js';
import { RcarClient } from '../../src/session/rcar-client.js';
import { HttpRangeSource } from '../../src/sources/index.js';

const LOOPBACK = [
  'localhost',
  'LOCALHOST',
  '127.0.0.1',
  '127.255.255.254',
  '127.5.0.1',
  '::1',
  '[::1]',
  '0:0:0:0:0:0:0:1',
  '0000:0000:0000:0000:0000:0000:0000:0001',
  '0::1',
  '[0:0::1]',
  '::ffff:127.0.0.1', // IPv4-mapped: a dual-stack socket reaches 127.0.0.1
  '[::ffff:127.0.0.1]',
  '::FFFF:127.1.2.3',
  '::ffff:7f00:1', // the same, as WHATWG URL writes it
  '[::ffff:7f00:1]',
];
const NOT_LOOPBACK = [
  '',
  'localhost.example',
  'example.com',
  '128.0.0.1',
  '126.255.255.255',
  '10.0.0.1',
  '0.0.0.0',
  '::',
  '::2',
  '[::2]',
  '::ffff:10.0.0.1',
  '::ffff:a00:1',
  '::127.0.0.1', // IPv4-compatible (deprecated), not mapped
  '64:ff9b::7f00:1', // NAT64
  'fe80::1',
  '::1%lo',
  '[::1',
  '127.0.0.1.nip.io',
  '2130706433', // a number WHATWG URL would turn into 127.0.0.1, but not an address as given
];

describe('isLoopback', () => {
  it('takes every loopback form and nothing else', () => {
    for (const h of LOOPBACK) expect(isLoopback(h), h).toBe(true);
    for (const h of NOT_LOOPBACK) expect(isLoopback(h), h).toBe(false);
  });

  it('the broker, the session and the HTTP sources agree on every form', () => {
    const broker = (host: string): boolean => {
      try {
        resolveOptions({ keystore: {}, policies: {}, audit: {}, signingKey: {}, receiptKey: {}, host, port: 0, allowSimulated: false, allowPlainHttpOnLoopback: true } as unknown as BrokerOptions);
        return true;
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        return false;
      }
    };
    const client = (url: string): boolean => {
      try {
        new RcarClient({ broker: url, allowPlainHttpOnLoopback: true }).close();
        return true;
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        return false;
      }
    };
    const source = (url: string): boolean => {
      try {
        new HttpRangeSource(url, { allowHttp: true });
        return true;
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        return false;
      }
    };
    for (const h of ['127.0.0.1', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f00:1', 'localhost']) {
      expect(broker(h), h).toBe(true);
      const url = `http://${h.includes(':') ? `[${h}]` : h}:1/m.sealed`;
      expect(client(url), url).toBe(true);
      expect(source(url), url).toBe(true);
    }
    for (const h of ['10.0.0.1', '::2', '::ffff:10.0.0.1', '::127.0.0.1', 'example.com']) {
      expect(broker(h), h).toBe(false);
      const url = `http://${h.includes(':') ? `[${h}]` : h}:1/m.sealed`;
      expect(client(url), url).toBe(false);
      expect(source(url), url).toBe(false);
    }
  });
});
