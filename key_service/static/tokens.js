/* Management Tokens: the list, the Issue New Token / New Management Token Created dialogs and the
   Revoke dialog.

   A new token lives only in the text of #token-created-secret while that dialog is open, as a new
   key's secret does on Manage API Keys: Confirm empties the element, nothing else holds it. */
(function () {
  'use strict';

  const B = window.Backoffice;
  const PAGE_SIZE = 100;

  let el = {};
  let tokens = [];
  let busy = false;
  let revokeTarget = null;
  let revokeInvoker = null;

  function byId(id) {
    return document.getElementById(id);
  }

  // -- the list ------------------------------------------------------------------------------
  function scopesCell(scopes) {
    const td = document.createElement('td');
    td.className = 'cell-scopes';
    td.dataset.label = 'Scopes';
    scopes.forEach(function (scope, index) {
      if (index) td.appendChild(document.createTextNode(' '));
      const code = document.createElement('code');
      code.textContent = scope;
      td.appendChild(code);
    });
    return td;
  }

  function row(token) {
    const tr = document.createElement('tr');
    tr.dataset.tokenId = token.token_id;
    const revoked = token.status === 'revoked';
    if (revoked) tr.className = 'is-revoked';
    tr.appendChild(B.textCell('Token Name', 'cell-name', token.name, false));
    tr.appendChild(B.textCell('Token ID', 'cell-id', token.token_id, true));
    tr.appendChild(scopesCell(token.scopes));
    tr.appendChild(B.dateCell('Issued On', token.created_at));
    if (revoked && token.revoked_at) {
      tr.appendChild(B.dateCell('Revoked On', token.revoked_at));
    } else {
      const td = document.createElement('td');
      td.className = 'cell-status';
      td.dataset.label = 'Revoked On';
      td.appendChild(B.badge('badge-active', 'Active'));
      tr.appendChild(td);
    }
    const action = document.createElement('td');
    action.className = 'cell-action';
    action.dataset.label = 'Revoke This Token';
    if (revoked) {
      action.classList.add('is-empty');
    } else {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'btn btn-outline-danger revoke-button';
      button.textContent = 'Revoke';
      button.setAttribute('aria-label', 'Revoke token ' + token.name);
      button.addEventListener('click', function () { openRevoke(token, button); });
      action.appendChild(button);
    }
    tr.appendChild(action);
    return tr;
  }

  function render() {
    const rows = tokens.length
      ? tokens.map(row)
      : [B.placeholderRow('No tokens yet. Select Issue New Token to issue the first one.', 6)];
    el.body.replaceChildren.apply(el.body, rows);
    const active = tokens.filter(function (t) { return t.status !== 'revoked'; }).length;
    el.summary.textContent = tokens.length
      ? active + ' active, ' + (tokens.length - active) + ' revoked.'
      : '';
  }

  async function load() {
    tokens = B.activeFirst(await B.loadAll('/api/v1/tokens', PAGE_SIZE), 'token_id', 'created_at');
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
        el.listError.textContent = 'Could not load the tokens: ' + err.message;
        el.listError.hidden = false;
      }
      return false;
    }
  }

  function announce(message) {
    el.status.textContent = message;
  }

  // -- Issue New Token -------------------------------------------------------------------------
  function setError(input, box, message) {
    box.textContent = message;
    box.hidden = !message;
    if (message) {
      input.setAttribute('aria-invalid', 'true');
    } else {
      input.removeAttribute('aria-invalid');
    }
  }

  function chosenScopes() {
    return Array.prototype.map.call(
      el.form.querySelectorAll('input[name="scope"]:checked'), function (box) { return box.value; });
  }

  function openIssue() {
    el.form.reset();
    setError(el.name, el.nameError, '');
    setError(el.scopes, el.scopesError, '');
    announce('');
    el.dialog.showModal();
    el.name.focus();
  }

  async function submitIssue(event) {
    event.preventDefault();
    if (busy) return;
    const name = el.name.value.trim();
    const scopes = chosenScopes();
    setError(el.name, el.nameError, name ? '' : 'Enter a token name.');
    setError(el.scopes, el.scopesError, scopes.length ? '' : 'Choose at least one scope.');
    if (!name) {
      el.name.focus();
      return;
    }
    if (!scopes.length) {
      el.form.querySelector('input[name="scope"]').focus();
      return;
    }
    busy = true;
    el.submit.disabled = true;
    try {
      const created = await B.api('POST', '/api/v1/tokens', { name: name, scopes: scopes });
      el.dialog.close();
      showCreated(created);
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.toLogin('expired');
      } else if (err instanceof B.ApiError && err.field === 'scopes') {
        setError(el.scopes, el.scopesError, err.message);
      } else if (err instanceof B.ApiError) {
        setError(el.name, el.nameError, err.message);
        el.name.focus();
      } else {
        setError(el.name, el.nameError, 'Could not reach the server. Check your connection and try again.');
      }
    } finally {
      busy = false;
      el.submit.disabled = false;
    }
  }

  // -- New Management Token Created ----------------------------------------------------------
  function showCreated(created) {
    el.createdName.textContent = created.name;
    el.createdId.textContent = created.token_id;
    el.createdScopes.textContent = created.scopes.join(', ');
    el.createdSecret.textContent = created.token;
    el.copyStatus.textContent = '';
    el.createdDialog.dataset.tokenId = created.token_id;
    el.createdDialog.showModal();
    el.copy.focus();
  }

  function forgetToken() {
    B.forget([el.createdSecret, el.createdName, el.createdId, el.createdScopes, el.copyStatus]);
  }

  async function afterCreatedClosed() {
    const tokenId = el.createdDialog.dataset.tokenId || '';
    delete el.createdDialog.dataset.tokenId;
    forgetToken();
    if (await refresh()) {
      const created = tokens.filter(function (t) { return t.token_id === tokenId; })[0];
      announce(created ? 'Token “' + created.name + '” issued.' : '');
    }
    el.open.focus();
  }

  // -- Revoke ----------------------------------------------------------------------------------
  function openRevoke(token, invoker) {
    revokeTarget = token;
    revokeInvoker = invoker;
    el.revokeName.textContent = token.name;
    el.revokeId.textContent = token.token_id;
    el.revokeError.hidden = true;
    announce('');
    el.revokeDialog.showModal();
    el.revokeCancel.focus();
  }

  async function confirmRevoke() {
    if (busy || !revokeTarget) return;
    const token = revokeTarget;
    busy = true;
    el.revokeConfirm.disabled = true;
    try {
      await B.api('POST', '/api/v1/tokens/' + encodeURIComponent(token.token_id) + '/revoke');
      revokeInvoker = null;
      el.revokeDialog.close();
      if (await refresh()) announce('Token “' + token.name + '” revoked.');
      el.open.focus();
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.toLogin('expired');
      } else if (err instanceof B.ApiError && err.status === 409) {
        revokeInvoker = null;
        el.revokeDialog.close();
        await refresh();
        announce('Token “' + token.name + '” was already revoked.');
        el.open.focus();
      } else {
        el.revokeError.textContent = 'Could not revoke the token: ' + err.message;
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

  document.addEventListener('DOMContentLoaded', async function () {
    el = {
      table: byId('tokens'), body: byId('tokens-body'), summary: byId('tokens-summary'),
      status: byId('status'), listError: byId('list-error'), open: byId('token-open'),
      dialog: byId('token-dialog'), form: byId('token-form'), name: byId('token-name'),
      nameError: byId('token-name-error'), scopes: byId('token-scopes'),
      scopesError: byId('token-scopes-error'), submit: byId('token-submit'),
      cancel: byId('token-cancel'),
      createdDialog: byId('token-created-dialog'), createdName: byId('token-created-name'),
      createdId: byId('token-created-id'), createdScopes: byId('token-created-scopes'),
      createdSecret: byId('token-created-secret'), copy: byId('token-copy'),
      copyStatus: byId('token-copy-status'), createdConfirm: byId('token-created-confirm'),
      revokeDialog: byId('token-revoke-dialog'), revokeName: byId('token-revoke-name'),
      revokeId: byId('token-revoke-id'), revokeError: byId('token-revoke-error'),
      revokeCancel: byId('token-revoke-cancel'), revokeConfirm: byId('token-revoke-confirm'),
    };
    [el.dialog, el.createdDialog, el.revokeDialog].forEach(B.trapFocus);

    el.open.addEventListener('click', openIssue);
    el.form.addEventListener('submit', submitIssue);
    el.cancel.addEventListener('click', function () { el.dialog.close(); });
    el.dialog.addEventListener('close', function () {
      el.name.value = '';
      if (!el.createdDialog.open) el.open.focus();
    });

    el.copy.addEventListener('click', function () { B.copyText(el.createdSecret, el.copyStatus); });
    el.createdConfirm.addEventListener('click', function () {
      forgetToken();
      el.createdDialog.close();
    });
    // Only Confirm closes this window: Escape must not throw the token away by accident.
    el.createdDialog.addEventListener('cancel', function (event) { event.preventDefault(); });
    el.createdDialog.addEventListener('close', afterCreatedClosed);

    el.revokeCancel.addEventListener('click', function () { el.revokeDialog.close(); });
    el.revokeConfirm.addEventListener('click', confirmRevoke);
    el.revokeDialog.addEventListener('close', afterRevokeClosed);

    el.table.setAttribute('aria-busy', 'true');
    await refresh();
  });
}());
