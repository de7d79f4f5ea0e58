// bouncekeeper VERP, specification version 1 (docs/verp-spec.md): sign an envelope sender in Node.js.
// Tested by tests/test_verp_spec.py against the specification's vectors and `bouncekeeper verp decode`.
//
//   import { readFileSync } from 'node:fs';
//   import { verpKey, verpSign } from './verp.mjs';
//   const key = verpKey(readFileSync('/etc/bouncekeeper/verp.key'));
//   const sender = verpSign('alice@example.org', key, 'bounce.example.net', { context: 'news-42' });
//   // nodemailer: { envelope: { from: sender, to: 'alice@example.org' }, ... }
//
// Throws VerpError (.reason "unencodable" or "too_long") for a recipient that has no VERP address: send
// that one with your plain sender. Needs Node.js >= 12 (node:crypto; Unicode property escapes).

import { createHash, createHmac } from 'node:crypto';

export class VerpError extends Error {
  constructor(reason, message) {
    super(`${reason}: ${message}`);
    this.reason = reason;
  }
}

const ASCII_SPACE = new Set([0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c]);
const WIDE = '[^\\x00-\\x7f\\p{C}\\p{Z}]'; // printable non-ASCII, no space (RFC 6531)
const LOCAL = new RegExp(`^(?:[a-z0-9!#$%&'*+/=?^_\`{|}~.-]|${WIDE})+$`, 'u');
const DOMAIN = new RegExp(`^(?:[a-z0-9.-]|${WIDE})+$`, 'u');
const CONTEXT = /^[a-z0-9][a-z0-9._-]*$/;

/** The key as bouncekeeper reads a key file (a Buffer or a string): ASCII white space stripped at both ends. */
export function verpKey(contents) {
  let key = Buffer.from(contents);
  let start = 0;
  let end = key.length;
  while (start < end && ASCII_SPACE.has(key[start])) start++;
  while (end > start && ASCII_SPACE.has(key[end - 1])) end--;
  key = key.subarray(start, end);
  if (key.length < 16) throw new Error('key shorter than 16 bytes');
  return key;
}

export function verpSign(recipient, key, bounceDomain, { context = '', day, prefix = 'bounces' } = {}) {
  day = day ?? Math.floor(Date.now() / 86400000); // days since the epoch, UTC
  const rcpt = recipient.replace(/^[ \t\n\r\v\f]+|[ \t\n\r\v\f]+$/g, '').toLowerCase();
  const at = rcpt.lastIndexOf('@');
  if (at <= 0 || at === rcpt.length - 1) throw new VerpError('unencodable', `not an address: ${recipient}`);
  const local = rcpt.slice(0, at);
  const domain = rcpt.slice(at + 1);
  if (!LOCAL.test(local)) throw new VerpError('unencodable', `local part: ${recipient}`);
  if (!DOMAIN.test(domain) || /^[.-]|[.-]$/.test(domain) || domain.includes('..')) {
    throw new VerpError('unencodable', `domain: ${recipient}`);
  }
  if (context !== '' && !CONTEXT.test(context)) throw new VerpError('unencodable', `context: ${context}`);
  prefix = prefix.toLowerCase();
  if (!CONTEXT.test(prefix) || !(day >= 0)) throw new Error('bad prefix or day');
  const body = `${local}=${domain}` + (context !== '' ? `+${context}` : '');
  const keyId = createHash('sha1').update(key).digest('hex').slice(0, 2);
  const mac = createHmac('sha1', key).update(`${day}:${body}`, 'utf8').digest('hex').slice(0, 10);
  const localPart = `${prefix}+${body}+${day}${keyId}${mac}`;
  const address = `${localPart}@${bounceDomain.toLowerCase().replace(/\.+$/, '')}`;
  if (Buffer.byteLength(localPart) > 64 || Buffer.byteLength(address) > 254) {
    throw new VerpError('too_long', recipient);
  }
  return address;
}
