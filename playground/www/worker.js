// Runs the preview module off the page's thread, so a large input never freezes the page (the
// page stops a run that takes too long by ending this worker).
import init, { preview, examples, version } from './pkg/capa_playground.js';

const ready = init();

self.onmessage = async (event) => {
  const { id, call, request } = event.data;
  try {
    await ready;
    let answer;
    if (call === 'preview') answer = preview(JSON.stringify(request));
    else if (call === 'examples') answer = examples();
    else answer = version();
    self.postMessage({ id, answer: JSON.parse(answer) });
  } catch (e) {
    self.postMessage({ id, answer: { ok: false, failed: true, error: `the policy module failed: ${e}` } });
  }
};
