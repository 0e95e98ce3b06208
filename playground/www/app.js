// The playground page: collects the inputs, asks the worker (the policy's code, compiled to
// WebAssembly) for `capa-admin preview -o json`, and renders the report. Every text the user gave
// is shown with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const LIMIT_MS = 60000;

const state = { files: [], configmap: null, settings: null, runs: 0, shown: 0 };
let worker = null;
let nextId = 0;
const pending = new Map();

function startWorker() {
  worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = (e) => {
    const p = pending.get(e.data.id);
    if (p) { pending.delete(e.data.id); clearTimeout(p.timer); p.resolve(e.data.answer); }
    // a module that failed (a trap) is not used again
    if (e.data.answer && e.data.answer.failed) restartWorker('the policy module failed; it was restarted');
  };
  worker.onerror = (e) => restartWorker(`the policy module could not run: ${e.message || 'unknown error'}`);
}

// Ends the worker (and whatever it is running), answers every waiting call with `message`, and
// starts a new one.
function restartWorker(message) {
  worker.terminate();
  for (const [id, p] of pending) { clearTimeout(p.timer); p.resolve({ ok: false, error: message, superseded: true }); pending.delete(id); }
  startWorker();
}

// One call to the worker; a run that outlives LIMIT_MS ends the worker (a new one takes over).
function call(name, request) {
  return new Promise((resolve) => {
    const id = nextId++;
    const timer = setTimeout(() => {
      pending.delete(id);
      restartWorker('stopped with a preview that took too long');
      resolve({ ok: false, error: `stopped after ${LIMIT_MS / 1000} s: the input is too large for the page; run capa-admin preview on the files instead` });
    }, LIMIT_MS);
    pending.set(id, { resolve, timer });
    worker.postMessage({ id, call: name, request });
  });
}

function request(format) {
  const inputs = state.files.map((f) => ({ name: f.name, text: f.text }));
  const pasted = $('pasted').value;
  if (pasted.trim() !== '') inputs.push({ name: 'pasted', text: pasted });
  const optional = (box, file) => {
    const text = $(box).value;
    if (text.trim() === '') return null;
    return { name: file && file.text === text ? file.name : `pasted ${box === 'configmap' ? 'ConfigMap' : 'settings'}`, text };
  };
  return {
    inputs, format, patch: true,
    configmap: optional('configmap', state.configmap),
    settings: optional('settings', state.settings),
  };
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const VERDICT = {
  'would-change': 'would change', 'already-right': 'already right', skipped: 'skipped',
  'not-annotated': 'not annotated', 'not-sent': 'not sent to the policy',
};
const SOURCE = { configmap: 'the ConfigMap', builtin: 'the built-in table', overrides: 'the overrides setting' };

function shown(v) { return v === null || v === undefined ? '(none)' : v; }

function renderObject(o) {
  const name = `${o.namespace ? o.namespace + '/' : ''}${o.name || '(unnamed)'}`;
  const reason = o.skipReason || o.problem || o.notSentReason;
  const head = el('h3', {},
    el('span', { class: 'kind', text: `${o.kind} ` }), name, ' ',
    el('span', { class: `badge ${o.result}`, text: VERDICT[o.result] || o.result }));
  const meta = [];
  if (o.instanceType) meta.push(`instance type ${o.instanceType}`);
  if (o.source) meta.push(`from ${SOURCE[o.source] || o.source}`);
  if (reason) meta.push(reason);
  meta.push(o.input);
  const card = el('article', { class: `object ${o.result}` }, head, el('p', { class: 'meta', text: meta.join(' · ') }));
  if (o.annotations.length > 0) {
    const wrong = new Set(o.wrongValues.map((w) => w.key));
    const rows = o.annotations.map((a) => {
      const changed = a.before !== a.after;
      return el('tr', { class: changed ? 'changed' : '' },
        el('td', { class: 'key', text: a.key }),
        el('td', { class: wrong.has(a.key) ? 'wrong' : '', text: shown(a.before) }),
        el('td', { text: changed ? `→ ${shown(a.after)}` : 'unchanged' }));
    });
    card.append(el('table', {}, el('thead', {}, el('tr', {},
      el('th', { text: 'annotation' }), el('th', { text: 'before' }), el('th', { text: 'after' }))),
    el('tbody', {}, ...rows)));
  }
  if (o.wrongValues.length > 0) {
    card.append(el('p', { class: 'wrong', text: `Wrong values the autoscaler would have used: ${o.wrongValues.map((w) => `${w.key} ${w.found} (table: ${w.table})`).join(', ')}` }));
  }
  if (o.warnings.length > 0) card.append(el('ul', { class: 'warnings' }, ...o.warnings.map((w) => el('li', { text: w }))));
  if (o.patch.length > 0) {
    card.append(el('details', {}, el('summary', { text: 'JSON patch the policy server would send' }),
      el('pre', { text: JSON.stringify(o.patch, null, 2) })));
  }
  return card;
}

function renderSummary(s, table) {
  const rows = [
    ['objects read', s.read], ['not sent to the policy', s.notSent], ['would change', s.wouldChange],
    ['already right', s.alreadyRight], ['skipped', s.skipped], ['not annotated (warning)', s.notAnnotated],
    ['unknown instance types', s.unknownInstanceTypes.length, s.unknownInstanceTypes.join(', ')],
    ['wrong values found', s.wrongValues, s.wrongValues > 0 ? `on ${s.wrongValueObjects} object${s.wrongValueObjects === 1 ? '' : 's'}` : ''],
    ['GPU without accelerator label', s.missingAcceleratorLabel], ['warnings', s.warnings],
  ];
  const tableText = table.configMap ? `ConfigMap ${table.configMap}, then the built-in table of ${table.builtinDate}` : `the built-in table of ${table.builtinDate}`;
  return el('div', {}, el('h2', { text: 'Summary' }), el('p', { class: 'muted', text: `table: ${tableText}` }),
    el('table', { class: 'summary' }, el('tbody', {}, ...rows.map(([k, n, d]) =>
      el('tr', {}, el('td', { text: k }), el('td', { class: 'n', text: String(n) }), el('td', { class: 'muted', text: d || '' }))))));
}

function clearResults() {
  for (const id of ['summary', 'objects', 'notes']) $(id).replaceChildren();
  $('report-json').textContent = '';
  $('actions').hidden = true;
}

let timer = null;
function schedule() { document.body.dataset.state = 'busy'; clearTimeout(timer); timer = setTimeout(run, 250); }

async function run() {
  const req = request('json');
  const run = ++state.runs;
  if (req.inputs.length === 0) {
    clearResults();
    $('error').hidden = true;
    $('status').textContent = 'Load the examples, drop files or paste objects.';
    document.body.dataset.state = 'ready';
    return;
  }
  document.body.dataset.state = 'busy';
  $('status').textContent = 'Previewing…';
  // a preview still running is for older input: stop it rather than wait for it
  if (pending.size > 0) restartWorker('superseded by newer input');
  const started = performance.now();
  const answer = await call('preview', req);
  if (run !== state.runs) return; // a newer run is on its way
  const ms = Math.round(performance.now() - started);
  clearResults();
  if (!answer.ok) {
    $('error').textContent = answer.error;
    $('error').hidden = false;
    $('status').textContent = 'Nothing previewed: fix the input.';
    document.body.dataset.state = 'error';
    return;
  }
  $('error').hidden = true;
  const report = JSON.parse(answer.output);
  $('report-json').textContent = answer.output;
  $('notes').replaceChildren(...answer.notes.map((n) => el('li', { text: n })));
  $('summary').replaceChildren(renderSummary(report.summary, report.table));
  $('objects').replaceChildren(...report.objects.map(renderObject));
  $('actions').hidden = report.objects.length === 0;
  $('status').textContent = `${report.objects.length} object${report.objects.length === 1 ? '' : 's'} previewed in ${ms} ms.`;
  if (!document.body.dataset.firstResultMs) document.body.dataset.firstResultMs = String(Math.round(performance.now()));
  document.body.dataset.state = 'done';
}

function renderFiles() {
  $('file-list').replaceChildren(...state.files.map((f, i) => {
    const remove = el('button', { type: 'button', class: 'quiet small', 'aria-label': `remove ${f.name}`, text: '×' });
    remove.onclick = () => { state.files.splice(i, 1); renderFiles(); schedule(); };
    return el('li', {}, `${f.name} (${(f.text.length / 1024).toFixed(1)} KB) `, remove);
  }));
}

async function addFiles(list) {
  for (const file of list) state.files.push({ name: file.name, text: await file.text() });
  renderFiles();
  schedule();
}

async function loadOne(input, box, key) {
  const file = input.files[0];
  if (!file) return;
  const text = await file.text();
  state[key] = { name: file.name, text };
  $(box).value = text;
  $(`${key}-name`).textContent = file.name;
  $(`${box}-box`).open = true;
  schedule();
}

async function copyYaml() {
  const answer = await call('preview', request('yaml'));
  if (!answer.ok) { $('copied').textContent = answer.error; return; }
  try {
    await navigator.clipboard.writeText(answer.output);
    $('copied').textContent = 'Copied: every object as admission would store it.';
  } catch {
    $('copied').textContent = 'The browser refused the clipboard: the YAML is below.';
  }
  let box = $('patched-yaml');
  if (!box) {
    box = el('pre', { id: 'patched-yaml' });
    $('actions').append(el('details', { open: '' }, el('summary', { text: 'Patched YAML' }), box));
  }
  box.textContent = answer.output;
}

function init() {
  startWorker();
  $('files').onchange = (e) => { addFiles([...e.target.files]); e.target.value = ''; };
  $('configmap-file').onchange = (e) => loadOne(e.target, 'configmap', 'configmap');
  $('settings-file').onchange = (e) => loadOne(e.target, 'settings', 'settings');
  for (const id of ['pasted', 'configmap', 'settings']) $(id).addEventListener('input', schedule);
  $('examples').onclick = async () => {
    const examples = await call('examples');
    if (!Array.isArray(examples)) {
      $('error').textContent = examples.error || 'the examples could not be loaded';
      $('error').hidden = false;
      return;
    }
    state.files = examples;
    renderFiles();
    run();
  };
  $('clear').onclick = () => {
    state.files = []; state.configmap = null; state.settings = null;
    for (const id of ['pasted', 'configmap', 'settings']) $(id).value = '';
    for (const id of ['configmap-name', 'settings-name']) $(id).textContent = '';
    renderFiles();
    run();
  };
  $('copy-yaml').onclick = copyYaml;
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); addFiles([...e.dataTransfer.files]); });
  call('version').then((v) => {
    if (v.ok === false) { $('error').textContent = v.error; $('error').hidden = false; return; }
    $('version').textContent = `capa-annotator ${v.version}, built-in table of ${v.builtinDate}`;
    $('status').textContent = 'Load the examples, drop files or paste objects.';
    document.body.dataset.state = 'ready';
    // index.html#examples opens with the examples loaded
    if (location.hash === '#examples') $('examples').click();
  });
}

init();
