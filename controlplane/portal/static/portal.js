// Live chat: append messages from the case's Server-Sent Events stream.
(function () {
  const list = document.querySelector('ol.chat[data-events]');
  if (!list || !window.EventSource) return;
  const es = new EventSource(list.dataset.events);
  es.addEventListener('message', (ev) => {
    const m = JSON.parse(ev.data);
    if (list.querySelector('[data-id="' + m.id + '"]')) return;
    const li = document.createElement('li');
    li.dataset.id = m.id;
    const b = document.createElement('b');
    b.textContent = m.authorName || '';
    const p = document.createElement('p');
    p.textContent = m.body || '';
    li.append(b, ' ', p);
    list.append(li);
    list.scrollTop = list.scrollHeight;
  });
})();

// Clear the chat input after htmx posted it successfully (no inline
// handlers: the Content-Security-Policy forbids eval).
document.addEventListener('htmx:afterRequest', (ev) => {
  const form = ev.target.closest && ev.target.closest('form[data-reset-on-success]');
  if (form && ev.detail.successful) form.reset();
});

// Copy buttons (data-copy="text"), e.g. the gantryctl tunnel commands.
document.addEventListener('click', async (ev) => {
  const btn = ev.target.closest && ev.target.closest('button[data-copy]');
  if (!btn) return;
  try {
    await navigator.clipboard.writeText(btn.dataset.copy);
    btn.textContent = 'Copied';
  } catch {
    const code = btn.parentElement.querySelector('code');
    if (code) window.getSelection().selectAllChildren(code);
    btn.textContent = 'Press Ctrl+C';
  }
  setTimeout(() => { btn.textContent = 'Copy'; }, 2000);
});
