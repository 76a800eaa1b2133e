// A plain Express app that reports how Express/Node parsed each request, for the differential
// tests: every method on every path answers 200 application/json (see README.md for the fields).
//
// Listens on 127.0.0.1 and an ephemeral port, prints `PORT <n>` as its first line of stdout, and
// exits as soon as its stdin reaches EOF, so a test that dies never leaves it running.
'use strict';

const path = require('path');
const express = require('express');
// The very qs that Express uses for its 'extended' query parser (Express 4's default).
const qs = require(require.resolve('qs', { paths: [path.dirname(require.resolve('express'))] }));

const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'];

function safe(fn) {
  try {
    return fn();
  } catch (err) {
    return { error: `${err.name}: ${err.message}` };
  }
}

function rawQuery(url) {
  const i = url.indexOf('?');
  return i < 0 ? '' : url.slice(i + 1);
}

const app = express();
// Express's own default body parsing for forms (not enabled by Express itself, but what an app
// that reads forms adds); every Express default setting is left as it is.
app.use(express.urlencoded());

app.use((req, res) => {
  const raw = rawQuery(req.url);
  const usp = new URLSearchParams(raw);
  const multi = {};
  for (const name of new Set(usp.keys())) multi[name] = usp.getAll(name);
  const first = {};
  const last = {};
  for (const [k, v] of Object.entries(multi)) {
    first[k] = v[0];
    last[k] = v[v.length - 1];
  }
  const override = {};
  for (const h of OVERRIDE_HEADERS) override[h] = req.headers[h] ?? null;
  // Like Flask's request.values: the query string first, then the form body.
  override._method_query = (req.query ? req.query._method : undefined) ?? null;
  override._method_form =
    (req.body && typeof req.body === 'object' ? req.body._method : undefined) ?? null;
  override._method = override._method_query ?? override._method_form;

  res.status(200).json({
    framework: 'express',
    method: req.method,
    path: safe(() => req.path),
    url: req.url,
    original_url: req.originalUrl,
    hostname: safe(() => req.hostname ?? null),
    host: safe(() => req.host ?? null),
    host_header: req.headers.host ?? null,
    raw_query: raw,
    query: req.query,
    query_qs: safe(() => qs.parse(raw, { allowPrototypes: true })),
    query_first: first,
    query_last: last,
    urlsearchparams: multi,
    headers: req.headers,
    raw_headers: req.rawHeaders,
    form: req.body ?? null,
    override,
    http_version: req.httpVersion,
  });
});

// A malformed body or similar reaches here; report it rather than Express's HTML error page.
app.use((err, req, res, _next) => {
  res.status(err.status || 500).json({ framework: 'express', error: `${err.name}: ${err.message}` });
});

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});

process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
