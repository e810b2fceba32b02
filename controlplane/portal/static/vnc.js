// noVNC viewer of a remote-access session (templates/vnc.html). The page
// carries a single-use session token; Reconnect asks the portal for a new
// one (POST, same origin), so every connection is authorized and audited
// by the server. We open the WebSocket ourselves and hand it to noVNC so
// the close frame's reason (e.g. "the remote-access grant ended") can be
// shown: noVNC's own disconnect event does not carry it.
import RFB from './vendor/novnc/core/rfb.js';

const root = document.querySelector('[data-testid=vnc]');
const el = (id) => root.querySelector(`[data-testid=${id}]`);
const statusEl = el('vnc-status');
const endedEl = el('vnc-ended');
const screen = el('vnc-screen');
const reconnectBtn = el('vnc-reconnect');
const scaleBox = el('vnc-scale');
const clipText = el('vnc-clipboard');
const clipSend = el('vnc-clipboard-send');
const cadBtn = el('vnc-cad');
const desktopEl = el('vnc-desktop');

let rfb = null;

function setStatus(text, state) {
  statusEl.textContent = text;
  root.dataset.state = state;
}

function wsURL(path, token) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}?token=${encodeURIComponent(token)}`;
}

function ended(message) {
  rfb = null;
  cadBtn.disabled = true;
  reconnectBtn.disabled = false;
  endedEl.textContent = message;
  endedEl.hidden = false;
  setStatus('Disconnected', 'ended');
}

function connect(path, token) {
  endedEl.hidden = true;
  reconnectBtn.disabled = true;
  setStatus('Connecting…', 'connecting');
  screen.replaceChildren();
  const ws = new WebSocket(wsURL(path, token), ['binary']);
  let closed = null;
  ws.addEventListener('close', (e) => { closed = e; });
  const r = new RFB(screen, ws, { shared: true });
  r.scaleViewport = scaleBox.checked;
  r.background = '#222';
  r.addEventListener('connect', () => {
    root.dataset.connects = String(Number(root.dataset.connects || 0) + 1);
    setStatus('Connected', 'connected');
    cadBtn.disabled = false;
    reconnectBtn.disabled = false;
  });
  r.addEventListener('desktopname', (e) => {
    desktopEl.textContent = e.detail.name;
    root.dataset.desktop = e.detail.name;
  });
  r.addEventListener('clipboard', (e) => { clipText.value = e.detail.text; });
  r.addEventListener('credentialsrequired', () => {
    const password = window.prompt('The machine asks for its VNC password');
    if (password === null) r.disconnect();
    else r.sendCredentials({ password });
  });
  r.addEventListener('securityfailure', (e) => {
    ended('The machine refused the login' + (e.detail.reason ? ': ' + e.detail.reason : '.'));
  });
  r.addEventListener('disconnect', () => {
    // The WebSocket's close event may arrive after noVNC's: read it on
    // the next turn.
    setTimeout(() => {
      if (rfb !== r) return; // replaced by Reconnect or already reported
      if (closed && closed.reason) ended('The session ended: ' + closed.reason + '.');
      else if (closed && closed.code === 1006 && root.dataset.state === 'connecting') ended('The session could not be opened: the server refused it or the machine is unreachable. Reconnect to try again.');
      else ended('The session ended.');
    }, 0);
  });
  rfb = r;
}

async function reconnect() {
  if (rfb) {
    const old = rfb;
    rfb = null;
    old.disconnect();
  }
  reconnectBtn.disabled = true;
  setStatus('Opening a new session…', 'connecting');
  try {
    const resp = await fetch(root.dataset.sessionUrl, { method: 'POST', headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      ended('A new session was refused: ' + (body.error || resp.statusText));
      return;
    }
    connect(body.websocketPath, body.token);
  } catch (err) {
    ended('Could not reach the control plane: ' + err.message);
  }
}

scaleBox.addEventListener('change', () => { if (rfb) rfb.scaleViewport = scaleBox.checked; });
reconnectBtn.addEventListener('click', reconnect);
cadBtn.addEventListener('click', () => { if (rfb) rfb.sendCtrlAltDel(); });
clipSend.addEventListener('click', () => { if (rfb) rfb.clipboardPasteFrom(clipText.value); });

connect(root.dataset.wsPath, root.dataset.token);
