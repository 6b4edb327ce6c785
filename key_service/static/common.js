/* Shared by every Backoffice page: calls to the JSON API, the login round trip, log out and
   dialog focus handling. Data is only ever written with textContent, never as markup. */
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
    api: api,
    clearPending: clearPending,
    currentUser: function () { return meta('backoffice-user'); },
    safeReturnPath: safeReturnPath,
    savePending: savePending,
    showGlobalError: showGlobalError,
    takePending: takePending,
    toLogin: toLogin,
    trapFocus: trapFocus,
  });
}());
