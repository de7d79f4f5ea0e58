<?php
// bouncekeeper VERP, specification version 1 (docs/verp-spec.md): sign an envelope sender in PHP.
// Tested by tests/test_verp_spec.py against the specification's vectors and `bouncekeeper verp decode`.
//
//   require 'verp.php';
//   $key = bk_verp_key(file_get_contents('/etc/bouncekeeper/verp.key'));
//   $sender = bk_verp_sign('alice@example.org', $key, 'bounce.example.net', 'news-42');
//   mail($to, $subject, $body, $headers, '-f' . $sender);   // or your SMTP library's envelope sender
//
// Throws InvalidArgumentException ("unencodable: ..." or "too_long: ...") for a recipient that has no VERP
// address: send that one with your plain sender. Needs PHP >= 7.4 (hash, pcre); mbstring only for
// recipients with upper-case non-ASCII letters (without it they are refused, never signed wrongly).

declare(strict_types=1);

/** The key as bouncekeeper reads a key file: ASCII white space stripped at both ends. */
function bk_verp_key(string $file_contents): string
{
    $key = trim($file_contents, " \t\n\r\v\f");
    if (strlen($key) < 16) {
        throw new InvalidArgumentException('key shorter than 16 bytes');
    }
    return $key;
}

function bk_verp_sign(
    string $recipient,
    string $key,
    string $bounce_domain,
    string $context = '',
    ?int $day = null,
    string $prefix = 'bounces'
): string {
    $day = $day ?? intdiv(time(), 86400);  // days since the epoch, UTC
    $rcpt = trim($recipient, " \t\n\r\v\f");
    if (function_exists('mb_strtolower')) {
        $rcpt = mb_strtolower($rcpt, 'UTF-8');
    } elseif (preg_match('/[^\x00-\x7f]/', $rcpt) && preg_match('/[\p{Lu}\p{Lt}]/u', $rcpt)) {
        throw new InvalidArgumentException("unencodable: upper-case non-ASCII needs mbstring: $recipient");
    } else {
        $rcpt = strtolower($rcpt);
    }
    $at = strrpos($rcpt, '@');
    if ($at === false || $at === 0 || $at === strlen($rcpt) - 1) {
        throw new InvalidArgumentException("unencodable: not an address: $recipient");
    }
    $local = substr($rcpt, 0, $at);
    $domain = substr($rcpt, $at + 1);
    $wide = '[^\x00-\x7f\p{C}\p{Z}]';  // printable non-ASCII, no space (RFC 6531)
    if (!preg_match("/^(?:[a-z0-9!#$%&'*+\\/=?^_`{|}~.-]|$wide)+\$/u", $local)) {
        throw new InvalidArgumentException("unencodable: local part: $recipient");
    }
    if (!preg_match("/^(?:[a-z0-9.-]|$wide)+\$/u", $domain) || trim($domain, '.-') !== $domain
        || strpos($domain, '..') !== false) {
        throw new InvalidArgumentException("unencodable: domain: $recipient");
    }
    if ($context !== '' && !preg_match('/^[a-z0-9][a-z0-9._-]*$/', $context)) {
        throw new InvalidArgumentException("unencodable: context: $context");
    }
    $prefix = strtolower($prefix);
    if (!preg_match('/^[a-z0-9][a-z0-9._-]*$/', $prefix) || $day < 0) {
        throw new InvalidArgumentException("bad prefix or day");
    }
    $body = "$local=$domain" . ($context !== '' ? "+$context" : '');
    $key_id = substr(sha1($key), 0, 2);
    $mac = substr(hash_hmac('sha1', "$day:$body", $key), 0, 10);
    $local_part = "$prefix+$body+$day$key_id$mac";
    $address = $local_part . '@' . rtrim(strtolower($bounce_domain), '.');
    if (strlen($local_part) > 64 || strlen($address) > 254) {
        throw new InvalidArgumentException("too_long: $recipient");
    }
    return $address;
}
