/* Shared by every Backoffice page: calls to the JSON API, the login round trip, log out, dialog
   focus handling, table cells and copying a one-time secret. Data is only ever written with
   textContent, never as markup. */
(function () {
  'use strict';

  const PENDING_KEY = 'backoffice.pending';
  // Return paths are same-site Backoffice paths only, so the login page cannot be turned into an
  // open redirect.
  const RETURN_PATH = /^\/backoffice\/[A-Za-z0-9._~\-\/]*$/;

  /** An error answer of the API, read from its problem+json body. */
  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || ('HTTP ' + status));
      this.status = status;
      this.field = problem ? problem.field : undefined;
    }
  }

  /** The session is gone (expired or logged out elsewhere): the caller goes to the login page. */
  class SessionExpired extends Error {}

  function meta(name) {
    const el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.content : '';
  }

  function safeReturnPath(path) {
    return typeof path === 'string' && RETURN_PATH.test(path) && path.indexOf('//') === -1
      && path !== '/backoffice/login' ? path : '/backoffice/';
  }

  async function readProblem(resp) {
    try {
      return await resp.json();
    } catch (err) {
      return null;
    }
  }

  /** Calls the JSON API; every state-changing call carries the CSRF token. */
  async function api(method, path, body) {
    const headers = { 'Accept': 'application/json' };
    if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = meta('csrf-token');
    const init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) throw new SessionExpired('session expired');
    if (resp.status === 204) return null;
    if (!resp.ok) throw new ApiError(resp.status, await readProblem(resp));
    return resp.json();
  }

  /** Sends the browser to the login page; it comes back to this page afterwards. */
  function toLogin(reason) {
    const next = safeReturnPath(window.location.pathname);
    const query = new URLSearchParams({ next: next });
    if (reason) query.set('reason', reason);
    window.location.assign('/backoffice/login?' + query.toString());
  }

  /** Non-secret view state kept across a login round trip, tied to the user it belongs to. */
  function savePending(state) {
    const record = Object.assign({ user: meta('backoffice-user'), page: window.location.pathname }, state);
    try {
      window.sessionStorage.setItem(PENDING_KEY, JSON.stringify(record));
    } catch (err) {
      /* Storage can be disabled; the user then only loses the half-filled dialog. */
    }
  }

  function takePending() {
    let record = null;
    try {
      const raw = window.sessionStorage.getItem(PENDING_KEY);
      window.sessionStorage.removeItem(PENDING_KEY);
      record = raw ? JSON.parse(raw) : null;
    } catch (err) {
      record = null;
    }
    if (!record || record.user !== meta('backoffice-user') || record.page !== window.location.pathname) {
      return null;
    }
    return record;
  }

  function clearPending() {
    try {
      window.sessionStorage.removeItem(PENDING_KEY);
    } catch (err) {
      /* nothing kept, nothing to clear */
    }
  }

  function showGlobalError(message) {
    const box = document.getElementById('global-alert');
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
  }

  const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]),'
    + ' textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

  /** Keeps Tab and Shift+Tab inside an open modal dialog. */
  function trapFocus(dialog) {
    dialog.addEventListener('keydown', function (event) {
      if (event.key !== 'Tab') return;
      const items = Array.prototype.filter.call(dialog.querySelectorAll(FOCUSABLE), function (el) {
        return el.getClientRects().length > 0;
      });
      if (items.length === 0) return;
      const first = items[0];
      const last = items[items.length - 1];
      const active = document.activeElement;
      if (event.shiftKey && (active === first || !dialog.contains(active))) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && (active === last || !dialog.contains(active))) {
        event.preventDefault();
        first.focus();
      }
    });
  }

  // -- tables ---------------------------------------------------------------------------------
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });

  /** Milliseconds since the epoch of an API timestamp (0 when it is not one). */
  function when(value) {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? 0 : ms;
  }

  /** A <time> element showing ``value`` (the date, or date and time), its full form as title. */
  function timeElement(value, withTime) {
    const time = document.createElement('time');
    time.dateTime = value;
    time.textContent = (withTime ? dateTimeFormat : dateFormat).format(new Date(value));
    time.title = fullFormat.format(new Date(value));
    return time;
  }

  /** Every item of a paged list (``items`` and ``next_cursor``), page after page. */
  async function loadAll(path, pageSize) {
    const all = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: String(pageSize) });
      if (cursor) query.set('cursor', cursor);
      const page = await api('GET', path + '?' + query.toString());
      Array.prototype.push.apply(all, page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return all;
  }

  /** Active items newest first (by ``issuedField``), then revoked ones, latest revoked last. */
  function activeFirst(items, idField, issuedField) {
    const active = items.filter(function (k) { return k.status !== 'revoked'; });
    const revoked = items.filter(function (k) { return k.status === 'revoked'; });
    active.sort(function (a, b) {
      return when(b[issuedField]) - when(a[issuedField]) || (a[idField] < b[idField] ? 1 : -1);
    });
    revoked.sort(function (a, b) {
      return when(a.revoked_at) - when(b.revoked_at) || (a[idField] < b[idField] ? -1 : 1);
    });
    return active.concat(revoked);
  }

  /** A table cell holding a date; ``label`` names its column on narrow screens. */
  function dateCell(label, value, withTime) {
    const td = document.createElement('td');
    td.className = 'cell-date';
    td.dataset.label = label;
    td.appendChild(timeElement(value, withTime));
    return td;
  }

  /** A table cell of plain text (or code). */
  function textCell(label, className, text, asCode) {
    const td = document.createElement('td');
    td.className = className;
    td.dataset.label = label;
    if (asCode) {
      const code = document.createElement('code');
      code.textContent = text;
      td.appendChild(code);
    } else {
      td.textContent = text;
    }
    return td;
  }

  /** A full-width row with a message (empty list, loading). */
  function placeholderRow(text, columns) {
    const tr = document.createElement('tr');
    tr.className = 'placeholder-row';
    const td = document.createElement('td');
    td.colSpan = columns;
    td.textContent = text;
    tr.appendChild(td);
    return tr;
  }

  /** A small badge (Active, Revokes on ...). */
  function badge(className, content) {
    const span = document.createElement('span');
    span.className = 'badge ' + className;
    if (typeof content === 'string') {
      span.textContent = content;
    } else {
      span.appendChild(content);
    }
    return span;
  }

  // -- a secret shown once ----------------------------------------------------------------------
  function copyByHand(element) {
    const selection = window.getSelection();
    const range = document.createRange();
    range.selectNodeContents(element);
    selection.removeAllRanges();
    selection.addRange(range);
    let copied = false;
    try {
      copied = document.execCommand('copy');
    } catch (err) {
      copied = false;
    }
    selection.removeAllRanges();
    return copied;
  }

  /** Copies the text of ``element`` to the clipboard and says so in ``status``. */
  async function copyText(element, status) {
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(element.textContent);
        copied = true;
      } catch (err) {
        copied = false;
      }
    }
    if (!copied) copied = copyByHand(element);
    status.textContent = copied
      ? 'Copied to the clipboard.'
      : 'Copying is blocked here: select the secret and copy it by hand.';
  }

  /** Empties the elements that showed a secret, and any selection of it. */
  function forget(elements) {
    elements.forEach(function (el) { el.textContent = ''; });
    const selection = window.getSelection();
    if (selection) selection.removeAllRanges();
  }

  async function logout() {
    const button = document.getElementById('logout');
    button.disabled = true;
    try {
      await api('DELETE', '/api/v1/session');
    } catch (err) {
      if (!(err instanceof SessionExpired)) {
        button.disabled = false;
        showGlobalError('Could not log out: ' + err.message);
        return;
      }
    }
    clearPending();
    window.location.assign('/backoffice/login?reason=logged_out');
  }

  document.addEventListener('DOMContentLoaded', function () {
    const button = document.getElementById('logout');
    if (button) button.addEventListener('click', logout);
  });

  window.Backoffice = Object.freeze({
    ApiError: ApiError,
    SessionExpired: SessionExpired,
    activeFirst: activeFirst,
    api: api,
    badge: badge,
    clearPending: clearPending,
    copyText: copyText,
    currentUser: function () { return meta('backoffice-user'); },
    dateCell: dateCell,
    forget: forget,
    loadAll: loadAll,
    placeholderRow: placeholderRow,
    safeReturnPath: safeReturnPath,
    savePending: savePending,
    showGlobalError: showGlobalError,
    takePending: takePending,
    textCell: textCell,
    timeElement: timeElement,
    toLogin: toLogin,
    trapFocus: trapFocus,
    when: when,
  });
}());
