// Prompt highlighting for A1111's syntax: a backdrop behind the (transparent-text) textarea repeats the prompt
// with emphasis brackets coloured by depth, weights (`:1.2`), `<lora:…>` tags, `BREAK` and escapes marked. Only
// colours change, never widths, so the backdrop wraps exactly like the textarea. The text itself is sent as typed.

const TOKEN = /\\[()[\]\\]|<[^<>\n]*>|\bBREAK\b|:\s*-?\d*\.?\d+\s*(?=[)\]])|[()[\]]/g;

function tokens(text) {
  const nodes = [];
  let at = 0;
  let depth = 0;
  for (const m of text.matchAll(TOKEN)) {
    if (m.index > at) nodes.push(document.createTextNode(text.slice(at, m.index)));
    const t = m[0];
    let cls;
    if (t[0] === '\\') cls = 'esc';
    else if (t[0] === '<') cls = 'tag';
    else if (t === 'BREAK') cls = 'brk';
    else if (t[0] === ':') cls = 'weight';
    else if (t === '(' || t === '[') {
      cls = `d${depth % 3}`;
      depth++;
    } else {
      depth = Math.max(0, depth - 1);
      cls = `d${depth % 3}`;
    }
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = t;
    nodes.push(span);
    at = m.index + t.length;
  }
  // A trailing newline needs one more line in the backdrop, as in the textarea.
  nodes.push(document.createTextNode(`${text.slice(at)}\n`));
  return nodes;
}

/** Highlights `textarea` (inside a `.hl` wrapper after its `.hl-back`) on input and when the form reloads values. */
export function highlightPrompt(textarea) {
  const back = textarea.parentElement.querySelector('.hl-back');
  const render = () => {
    back.replaceChildren(...tokens(textarea.value));
    back.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener('input', render);
  textarea.addEventListener('scroll', () => {
    back.scrollTop = textarea.scrollTop;
  });
  textarea.form?.addEventListener('values', render);
  render();
}
