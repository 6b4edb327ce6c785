/* Manage API Keys: the list, the Issue New Key / New API Key Created dialogs and the Revoke dialog.

   The secret of a new key lives only in the text of #created-secret while that dialog is open: no
   variable, attribute, storage, URL or history entry ever holds it, and Confirm empties the element. */
(function () {
  'use strict';

  const B = window.Backoffice;
  const PAGE_SIZE = 100;
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });

  let el = {};
  let keys = [];
  let busy = false;
  let revokeTarget = null;
  let revokeInvoker = null;

  function byId(id) {
    return document.getElementById(id);
  }

  // -- the list ------------------------------------------------------------------------------
  function when(value) {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? 0 : ms;
  }

  /** Active keys newest first, then revoked keys with the most recently revoked last. */
  function ordered(items) {
    const active = items.filter(function (k) { return k.status !== 'revoked'; });
    const revoked = items.filter(function (k) { return k.status === 'revoked'; });
    active.sort(function (a, b) {
      return when(b.issued_at) - when(a.issued_at) || (a.key_id < b.key_id ? 1 : -1);
    });
    revoked.sort(function (a, b) {
      return when(a.revoked_at) - when(b.revoked_at) || (a.key_id < b.key_id ? -1 : 1);
    });
    return active.concat(revoked);
  }

  function dateCell(label, value) {
    const td = document.createElement('td');
    td.className = 'cell-date';
    td.dataset.label = label;
    const time = document.createElement('time');
    time.dateTime = value;
    time.textContent = dateFormat.format(new Date(value));
    time.title = fullFormat.format(new Date(value));
    td.appendChild(time);
    return td;
  }

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

  function row(key) {
    const tr = document.createElement('tr');
    tr.dataset.keyId = key.key_id;
    const revoked = key.status === 'revoked';
    if (revoked) tr.className = 'is-revoked';
    tr.appendChild(textCell('Key Name', 'cell-name', key.name, false));
    tr.appendChild(textCell('Key ID', 'cell-id', key.key_id, true));
    tr.appendChild(dateCell('Issued On', key.issued_at));
    if (revoked && key.revoked_at) {
      tr.appendChild(dateCell('Revoked On', key.revoked_at));
    } else {
      const td = document.createElement('td');
      td.className = 'cell-status';
      td.dataset.label = 'Revoked On';
      const badge = document.createElement('span');
      badge.className = 'badge badge-active';
      badge.textContent = 'Active';
      td.appendChild(badge);
      tr.appendChild(td);
    }
    const action = document.createElement('td');
    action.className = 'cell-action';
    action.dataset.label = 'Revoke This Key';
    if (revoked) {
      // A revoked key cannot be revoked or reactivated: no button at all.
      action.classList.add('is-empty');
    } else {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'btn btn-outline-danger revoke-button';
      button.textContent = 'Revoke';
      button.setAttribute('aria-label', 'Revoke ' + key.name);
      button.addEventListener('click', function () { openRevoke(key, button); });
      action.appendChild(button);
    }
    tr.appendChild(action);
    return tr;
  }

  function placeholder(text) {
    const tr = document.createElement('tr');
    tr.className = 'placeholder-row';
    const td = document.createElement('td');
    td.colSpan = 5;
    td.textContent = text;
    tr.appendChild(td);
    return tr;
  }

  function render() {
    const rows = keys.length ? keys.map(row) : [placeholder('No keys yet. Select Issue New Key to issue the first one.')];
    el.body.replaceChildren.apply(el.body, rows);
    const active = keys.filter(function (k) { return k.status !== 'revoked'; }).length;
    el.summary.textContent = keys.length
      ? active + ' active, ' + (keys.length - active) + ' revoked.'
      : '';
  }

  /** Loads every page of the list, then renders it. */
  async function load() {
    const all = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (cursor) query.set('cursor', cursor);
      const page = await B.api('GET', '/api/v1/keys?' + query.toString());
      Array.prototype.push.apply(all, page.items);
      cursor = page.next_cursor;
    } while (cursor);
    keys = ordered(all);
    el.listError.hidden = true;
    el.table.setAttribute('aria-busy', 'false');
    render();
  }

  async function refresh() {
    try {
      await load();
      return true;
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.toLogin('expired');
      } else {
        el.listError.textContent = 'Could not load the keys: ' + err.message;
        el.listError.hidden = false;
      }
      return false;
    }
  }

  function announce(message) {
    el.status.textContent = message;
  }

  // -- Issue New Key -------------------------------------------------------------------------
  function setNameError(message) {
    el.nameError.textContent = message;
    el.nameError.hidden = !message;
    if (message) {
      el.name.setAttribute('aria-invalid', 'true');
    } else {
      el.name.removeAttribute('aria-invalid');
    }
  }

  function openIssue(prefill) {
    el.issueForm.reset();
    el.name.value = prefill || '';
    setNameError('');
    announce('');
    el.issueDialog.showModal();
    el.name.focus();
  }

  async function submitIssue(event) {
    event.preventDefault();
    if (busy) return;
    const name = el.name.value.trim();
    if (!name) {
      setNameError('Enter a key name.');
      el.name.focus();
      return;
    }
    setNameError('');
    busy = true;
    el.issueSubmit.disabled = true;
    try {
      const created = await B.api('POST', '/api/v1/keys', { name: name });
      el.issueDialog.close();
      showCreated(created);
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.savePending({ action: 'issue', name: name });
        B.toLogin('expired');
      } else if (err instanceof B.ApiError) {
        setNameError(err.message);
        el.name.focus();
      } else {
        setNameError('Could not reach the server. Check your connection and try again.');
      }
    } finally {
      busy = false;
      el.issueSubmit.disabled = false;
    }
  }

  // -- New API Key Created -------------------------------------------------------------------
  function showCreated(created) {
    el.createdName.textContent = created.name;
    el.createdId.textContent = created.key_id;
    el.createdSecret.textContent = created.secret;
    el.copyStatus.textContent = '';
    el.createdDialog.dataset.keyId = created.key_id;
    el.createdDialog.showModal();
    el.copy.focus();
  }

  function copyByHand() {
    const selection = window.getSelection();
    const range = document.createRange();
    range.selectNodeContents(el.createdSecret);
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

  async function copySecret() {
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(el.createdSecret.textContent);
        copied = true;
      } catch (err) {
        copied = false;
      }
    }
    if (!copied) copied = copyByHand();
    el.copyStatus.textContent = copied
      ? 'Copied to the clipboard.'
      : 'Copying is blocked here: select the secret and copy it by hand.';
  }

  function forgetSecret() {
    el.createdSecret.textContent = '';
    el.createdName.textContent = '';
    el.createdId.textContent = '';
    el.copyStatus.textContent = '';
    const selection = window.getSelection();
    if (selection) selection.removeAllRanges();
  }

  async function afterCreatedClosed() {
    const keyId = el.createdDialog.dataset.keyId || '';
    delete el.createdDialog.dataset.keyId;
    forgetSecret();
    if (await refresh()) {
      const created = keys.filter(function (k) { return k.key_id === keyId; })[0];
      announce(created ? 'Key “' + created.name + '” issued.' : '');
    }
    el.issueOpen.focus();
  }

  // -- Revoke ----------------------------------------------------------------------------------
  function openRevoke(key, invoker) {
    revokeTarget = key;
    revokeInvoker = invoker;
    el.revokeName.textContent = key.name;
    el.revokeId.textContent = key.key_id;
    el.revokeError.hidden = true;
    announce('');
    el.revokeDialog.showModal();
    el.revokeCancel.focus();
  }

  async function confirmRevoke() {
    if (busy || !revokeTarget) return;
    const key = revokeTarget;
    busy = true;
    el.revokeConfirm.disabled = true;
    try {
      await B.api('POST', '/api/v1/keys/' + encodeURIComponent(key.key_id) + '/revoke');
      revokeInvoker = null;
      el.revokeDialog.close();
      if (await refresh()) announce('Key “' + key.name + '” revoked.');
      el.issueOpen.focus();
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.savePending({ action: 'revoke', key_id: key.key_id });
        B.toLogin('expired');
      } else if (err instanceof B.ApiError && err.status === 409) {
        // Someone else revoked it meanwhile: show the list as it is now.
        revokeInvoker = null;
        el.revokeDialog.close();
        await refresh();
        announce('Key “' + key.name + '” was already revoked.');
        el.issueOpen.focus();
      } else {
        el.revokeError.textContent = 'Could not revoke the key: ' + err.message;
        el.revokeError.hidden = false;
      }
    } finally {
      busy = false;
      el.revokeConfirm.disabled = false;
    }
  }

  function afterRevokeClosed() {
    revokeTarget = null;
    el.revokeName.textContent = '';
    el.revokeId.textContent = '';
    if (revokeInvoker && revokeInvoker.isConnected) revokeInvoker.focus();
    revokeInvoker = null;
  }

  // -- after a login round trip: reopen what the user was doing --------------------------------
  function resume() {
    const pending = B.takePending();
    if (!pending) return;
    if (pending.action === 'issue' && typeof pending.name === 'string') {
      openIssue(pending.name);
      setNameError('');
      el.issueNotice.textContent = 'Your session had expired. Check the name and select Issue Key again.';
      el.issueNotice.hidden = false;
    } else if (pending.action === 'revoke') {
      const key = keys.filter(function (k) { return k.key_id === pending.key_id; })[0];
      if (key && key.status !== 'revoked') {
        const button = el.body.querySelector('tr[data-key-id="' + CSS.escape(key.key_id) + '"] .revoke-button');
        openRevoke(key, button);
      }
    }
  }

  document.addEventListener('DOMContentLoaded', async function () {
    el = {
      table: byId('keys'), body: byId('keys-body'), summary: byId('keys-summary'),
      status: byId('status'), listError: byId('list-error'), issueOpen: byId('issue-open'),
      issueDialog: byId('issue-dialog'), issueForm: byId('issue-form'), name: byId('key-name'),
      nameError: byId('key-name-error'), issueSubmit: byId('issue-submit'),
      issueCancel: byId('issue-cancel'), issueNotice: byId('issue-notice'),
      createdDialog: byId('created-dialog'), createdName: byId('created-name'),
      createdId: byId('created-id'), createdSecret: byId('created-secret'), copy: byId('copy-secret'),
      copyStatus: byId('copy-status'), createdConfirm: byId('created-confirm'),
      revokeDialog: byId('revoke-dialog'), revokeName: byId('revoke-name'), revokeId: byId('revoke-id'),
      revokeError: byId('revoke-error'), revokeCancel: byId('revoke-cancel'),
      revokeConfirm: byId('revoke-confirm'),
    };
    [el.issueDialog, el.createdDialog, el.revokeDialog].forEach(B.trapFocus);

    el.issueOpen.addEventListener('click', function () { openIssue(''); });
    el.issueForm.addEventListener('submit', submitIssue);
    el.issueCancel.addEventListener('click', function () { el.issueDialog.close(); });
    el.issueDialog.addEventListener('close', function () {
      el.name.value = '';
      el.issueNotice.hidden = true;
      setNameError('');
      if (!el.createdDialog.open) el.issueOpen.focus();
    });

    el.copy.addEventListener('click', copySecret);
    // Forget the secret before the dialog closes: the 'close' event fires a task later, and
    // nothing should be able to read the secret from the page after Confirm.
    el.createdConfirm.addEventListener('click', function () {
      forgetSecret();
      el.createdDialog.close();
    });
    // Escape must not throw the secret away by accident: only Confirm closes this window.
    el.createdDialog.addEventListener('cancel', function (event) { event.preventDefault(); });
    // Whatever closes it (Confirm, or a browser that forces Escape through), the secret goes.
    el.createdDialog.addEventListener('close', afterCreatedClosed);

    el.revokeCancel.addEventListener('click', function () { el.revokeDialog.close(); });
    el.revokeConfirm.addEventListener('click', confirmRevoke);
    el.revokeDialog.addEventListener('close', afterRevokeClosed);

    el.table.setAttribute('aria-busy', 'true');
    if (await refresh()) resume();
  });
}());
