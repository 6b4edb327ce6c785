/* Shared by every Backoffice page: calls to the JSON API, the login round trip, log out, dialog
   focus handling, table cells and copying a one-time secret. Data is only ever written with
   textContent, never as markup. */
(function () {
  'use strict';

  const PENDING_KEY = 'backoffice.pending';
  // Items per request when a page loads a whole list.
  const LIST_PAGE_SIZE = 100;
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

  /** A button of a table row; its accessible name says which item it acts on. */
  function rowButton(label, className, accessibleName, onClick) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn ' + className;
    button.textContent = label;
    button.setAttribute('aria-label', accessibleName);
    button.addEventListener('click', function () { onClick(button); });
    return button;
  }

  function capitalized(word) {
    return word.charAt(0).toUpperCase() + word.slice(1);
  }

  // -- the list of a settings page (keys, tokens) -------------------------------------------------
  /**
   * Every page of ``o.path`` loaded, active items first, one table row each from ``o.row``; a
   * failure is shown in ``o.listError`` and an expired session goes to the login page.
   * ``refresh()`` resolves to true once the table shows the list as it is now.
   */
  function listTable(o) {
    const list = { items: [] };
    const plural = o.noun + 's';

    function render() {
      const rows = list.items.length
        ? list.items.map(o.row)
        : [placeholderRow('No ' + plural + ' yet. Select Issue New ' + capitalized(o.noun)
          + ' to issue the first one.', o.columns)];
      o.body.replaceChildren.apply(o.body, rows);
      const active = list.items.filter(function (i) { return i.status !== 'revoked'; }).length;
      o.summary.textContent = list.items.length
        ? active + ' active, ' + (list.items.length - active) + ' revoked.'
        : '';
    }

    list.refresh = async function () {
      try {
        list.items = activeFirst(await loadAll(o.path, LIST_PAGE_SIZE), o.idField, o.issuedField);
      } catch (err) {
        if (err instanceof SessionExpired) {
          toLogin('expired');
        } else {
          o.listError.textContent = 'Could not load the ' + plural + ': ' + err.message;
          o.listError.hidden = false;
        }
        return false;
      }
      o.listError.hidden = true;
      o.table.setAttribute('aria-busy', 'false');
      render();
      return true;
    };

    list.find = function (id) {
      return list.items.filter(function (i) { return i[o.idField] === id; })[0];
    };

    o.table.setAttribute('aria-busy', 'true');
    return list;
  }

  /**
   * A long list shown a page at a time: the first page of ``o.path`` at once, then the next one
   * when ``o.more`` (a Load more button after the table) is selected or scrolls into view, and
   * only the items the search box ``o.search`` finds (``?q=``, debounced). The server keeps the
   * order (active newest first, then revoked). Same interface as ``listTable``: ``refresh()``
   * shows the first page again, ``find(id)`` looks among the rows loaded.
   */
  function pagedTable(o) {
    const list = { items: [] };
    const plural = o.noun + 's';
    let cursor = null;
    let query = '';
    // Bumped by every refresh and search: the answer to an older one is dropped.
    let generation = 0;
    let loading = null;
    let focusNext = false;
    let typing = null;

    function pageUrl(after) {
      const params = new URLSearchParams({ limit: String(LIST_PAGE_SIZE) });
      if (query) params.set('q', query);
      if (after) params.set('cursor', after);
      return o.path + '?' + params.toString();
    }

    function summarize() {
      const shown = list.items.length;
      const active = list.items.filter(function (i) { return i.status !== 'revoked'; }).length;
      const counts = active + ' active, ' + (shown - active) + ' revoked';
      let text = '';
      if (shown && cursor) {
        text = (query ? 'Matching ' + plural + ': ' : '') + 'the first ' + shown + ' shown ('
          + counts + '); more below.';
      } else if (shown) {
        text = (query ? shown + ' matching: ' : '') + counts + '.';
      }
      o.summary.textContent = text;
      o.more.hidden = !cursor;
    }

    function failed(err) {
      if (err instanceof SessionExpired) {
        toLogin('expired');
      } else {
        o.listError.textContent = 'Could not load the ' + plural + ': ' + err.message;
        o.listError.hidden = false;
      }
      return false;
    }

    async function fetchPage(after) {
      const mine = generation;
      o.table.setAttribute('aria-busy', 'true');
      try {
        const page = await api('GET', pageUrl(after));
        return mine === generation ? page : null;
      } finally {
        if (mine === generation) o.table.setAttribute('aria-busy', 'false');
      }
    }

    list.refresh = async function () {
      generation += 1;
      loading = null;
      focusNext = false;
      let page;
      try {
        page = await fetchPage(null);
      } catch (err) {
        return failed(err);
      }
      if (page === null) return false;  // a newer refresh or search took over
      o.listError.hidden = true;
      list.items = page.items.slice();
      cursor = page.next_cursor;
      const rows = list.items.length ? list.items.map(o.row) : [placeholderRow(query
        ? 'No ' + plural + ' match “' + query + '”.'
        : 'No ' + plural + ' yet. Select Issue New ' + capitalized(o.noun) + ' to issue the first one.',
      o.columns)];
      o.body.replaceChildren.apply(o.body, rows);
      summarize();
      return true;
    };

    function moreInView() {
      return !o.more.hidden && o.more.getBoundingClientRect().top < window.innerHeight + 200;
    }

    /** The next page, appended; ``byHand``: the user asked, so focus goes to its first row. */
    list.more = function (byHand) {
      if (byHand) focusNext = true;
      if (loading) return loading;
      if (!cursor) return Promise.resolve(false);
      const after = cursor;
      const mine = generation;
      loading = (async function () {
        let page;
        try {
          page = await fetchPage(after);
        } catch (err) {
          if (mine === generation) loading = null;
          return failed(err);
        }
        if (page === null) return false;  // a refresh or search began meanwhile
        loading = null;
        const rows = page.items.map(o.row);
        Array.prototype.push.apply(list.items, page.items);
        cursor = page.next_cursor;
        o.body.append.apply(o.body, rows);
        summarize();
        if (focusNext && rows.length) {
          rows[0].tabIndex = -1;
          rows[0].focus();
        }
        focusNext = false;
        // Still in view after a short page: keep going.
        if (moreInView()) list.more(false);
        return true;
      }());
      return loading;
    };

    list.find = function (id) {
      return list.items.filter(function (i) { return i[o.idField] === id; })[0];
    };

    function search(now) {
      clearTimeout(typing);
      const run = function () {
        const next = o.search.value.trim();
        if (next === query) return;
        query = next;
        list.refresh();
      };
      if (now) run(); else typing = setTimeout(run, 250);
    }

    o.search.addEventListener('input', function () { search(false); });
    o.search.form.addEventListener('submit', function (event) {
      event.preventDefault();
      search(true);
    });
    o.more.addEventListener('click', function () { list.more(true); });
    if ('IntersectionObserver' in window) {
      new IntersectionObserver(function (entries) {
        if (entries[entries.length - 1].isIntersecting) list.more(false);
      }, { rootMargin: '200px' }).observe(o.more);
    }
    o.table.setAttribute('aria-busy', 'true');
    return list;
  }

  // -- the Revoke window of a list ----------------------------------------------------------------
  /**
   * Shows an item's name and ID; Confirm revokes it (``o.path(item)``), refreshes ``o.list`` and
   * says so, or that it was revoked meanwhile (409). ``o.onExpired(item)`` runs before the
   * login round trip; focus returns to the button that opened it, or to ``o.home`` after a
   * revocation. Returns ``open(item, invoker)``.
   */
  function revokeWindow(o) {
    const Noun = capitalized(o.noun);
    let target = null;
    let invoker = null;
    let busy = false;

    function open(item, from) {
      target = item;
      invoker = from;
      o.name.textContent = item.name;
      o.id.textContent = item[o.idField];
      o.error.hidden = true;
      o.announce('');
      o.dialog.showModal();
      o.cancel.focus();
    }

    async function done(message) {
      invoker = null;
      o.dialog.close();
      if (await o.list.refresh()) o.announce(message);
      o.home.focus();
    }

    async function confirm() {
      if (busy || !target) return;
      const item = target;
      busy = true;
      o.confirm.disabled = true;
      try {
        const answer = await api('POST', o.path(item));
        const revoked = Noun + ' “' + item.name + '” revoked.';
        await done(o.revokedMessage ? o.revokedMessage(revoked, answer) : revoked);
      } catch (err) {
        if (err instanceof SessionExpired) {
          if (o.onExpired) o.onExpired(item);
          toLogin('expired');
        } else if (err instanceof ApiError && err.status === 409) {
          // Someone else revoked it meanwhile: show the list as it is now.
          await done(Noun + ' “' + item.name + '” was already revoked.');
        } else {
          o.error.textContent = 'Could not revoke the ' + o.noun + ': ' + err.message;
          o.error.hidden = false;
        }
      } finally {
        busy = false;
        o.confirm.disabled = false;
      }
    }

    trapFocus(o.dialog);
    o.cancel.addEventListener('click', function () { o.dialog.close(); });
    o.confirm.addEventListener('click', confirm);
    o.dialog.addEventListener('close', function () {
      if (o.dialog.open) return;  // reopened before this late 'close' task ran
      target = null;
      o.name.textContent = '';
      o.id.textContent = '';
      if (invoker && invoker.isConnected) invoker.focus();
      invoker = null;
    });
    return open;
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

  /**
   * The window that shows a new secret once (New API Key Created, New Management Token Created).
   * Copy copies it; only Confirm closes the window (Escape is refused, so that the secret is not
   * thrown away by accident); whatever closes it, the secret and the ``o.facts`` elements are
   * emptied first, then ``o.onClosed()`` runs. Returns ``show()``: fill the window, then call it.
   */
  function secretWindow(o) {
    function forgetAll() {
      forget([o.secret, o.copyStatus].concat(o.facts));
    }
    trapFocus(o.dialog);
    o.copy.addEventListener('click', function () { copyText(o.secret, o.copyStatus); });
    // Forgotten before the dialog closes: the 'close' event fires a task later, and nothing
    // should be able to read the secret from the page after Confirm.
    o.confirm.addEventListener('click', function () {
      forgetAll();
      o.dialog.close();
    });
    o.dialog.addEventListener('cancel', function (event) { event.preventDefault(); });
    // Whatever closes it (Confirm, or a browser that forces Escape through), the secret goes.
    o.dialog.addEventListener('close', function () {
      forgetAll();
      o.onClosed();
    });
    return function show() {
      o.copyStatus.textContent = '';
      o.dialog.showModal();
      o.copy.focus();
    };
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
    badge: badge,
    clearPending: clearPending,
    currentUser: function () { return meta('backoffice-user'); },
    dateCell: dateCell,
    listTable: listTable,
    pagedTable: pagedTable,
    placeholderRow: placeholderRow,
    revokeWindow: revokeWindow,
    rowButton: rowButton,
    safeReturnPath: safeReturnPath,
    secretWindow: secretWindow,
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
