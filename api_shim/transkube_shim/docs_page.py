"""The API reference page: plain HTML and a few lines of JavaScript that render /openapi.json. Nothing is
loaded from elsewhere, so it works offline and under a strict Content-Security-Policy."""

from __future__ import annotations

DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>transkube REST API</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
details { border: 1px solid #ddd; border-radius: 6px; margin: .4rem 0; padding: .3rem .6rem; }
summary { cursor: pointer; } code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f6f8fa; padding: .6rem; overflow: auto; border-radius: 4px; }
.m { display: inline-block; min-width: 4.2rem; font-weight: 600; text-transform: uppercase; }
.get { color: #0a6; } .post { color: #06c; } .delete { color: #c30; }
</style>
</head>
<body>
<h1>transkube REST API</h1>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<div id="ops">Loading…</div>
<h2>Schemas</h2>
<div id="schemas"></div>
<script src="/docs/app.js"></script>
</body>
</html>
"""

DOCS_JS = """'use strict';
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children || []) node.append(child);
  return node;
}
function pre(obj) { return el('pre', {}, [JSON.stringify(obj, null, 2)]); }
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const ops = document.getElementById('ops');
  ops.textContent = '';
  const byTag = {};
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      (byTag[op.tags[0]] = byTag[op.tags[0]] || []).push([path, method, op]);
    }
  }
  for (const [tag, list] of Object.entries(byTag)) {
    ops.append(el('h2', {}, [tag]));
    for (const [path, method, op] of list) {
      const body = [el('p', {}, [op.description || ''])];
      if (op.parameters) body.push(el('h4', {}, ['Parameters']), pre(op.parameters));
      if (op.requestBody) body.push(el('h4', {}, ['Body']), pre(op.requestBody.content));
      body.push(el('h4', {}, ['Responses']), pre(Object.fromEntries(
        Object.entries(op.responses).map(([c, r]) => [c, r.description]))));
      ops.append(el('details', {}, [el('summary', {}, [
        el('span', {class: 'm ' + method}, [method]), el('code', {}, [path]), ' — ' + op.summary]), ...body]));
    }
  }
  const schemas = document.getElementById('schemas');
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    schemas.append(el('details', {id: name}, [el('summary', {}, [el('code', {}, [name])]), pre(schema)]));
  }
}).catch(err => { document.getElementById('ops').textContent = 'Could not load /openapi.json: ' + err; });
"""
