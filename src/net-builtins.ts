/**
 * node:http, node:https, node:tls and node:net, loaded on first use: together they cost about 20 ms
 * of start-up, which importing the package (or running `seal`, `verify`, `inspect`) must not pay.
 * Only sessions and HTTP sources need them.
 */
import { createRequire } from 'node:module';
import type * as Http from 'node:http';
import type * as Https from 'node:https';
import type * as Net from 'node:net';
import type * as Tls from 'node:tls';

const require = createRequire(import.meta.url);

export const nodeHttp = (): typeof Http => require('node:http') as typeof Http;
export const nodeHttps = (): typeof Https => require('node:https') as typeof Https;
export const nodeNet = (): typeof Net => require('node:net') as typeof Net;
export const nodeTls = (): typeof Tls => require('node:tls') as typeof Tls;

export function isIP(host: string): number {
  return nodeNet().isIP(host);
}
