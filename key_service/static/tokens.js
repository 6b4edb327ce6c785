/* Management Tokens: the list, the Issue New Token / New Management Token Created dialogs and the
   Revoke dialog.

   A new token lives only in the text of #token-created-secret while that dialog is open, as a new
   key's secret does on Manage API Keys: Confirm empties the element, nothing else holds it. */
(function () {
  'use strict';

  const B = window.Backoffice;

  let el = {};
  let list = null;
  let openRevoke = null;
  let showToken = null;
  let busy = false;

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
      action.appendChild(B.rowButton('Revoke', 'btn-outline-danger revoke-button',
        'Revoke token ' + token.name, function (button) { openRevoke(token, button); }));
    }
    tr.appendChild(action);
    return tr;
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
    el.createdDialog.dataset.tokenId = created.token_id;
    showToken();
  }

  async function afterCreatedClosed() {
    const tokenId = el.createdDialog.dataset.tokenId || '';
    delete el.createdDialog.dataset.tokenId;
    if (await list.refresh()) {
      const created = list.find(tokenId);
      announce(created ? 'Token “' + created.name + '” issued.' : '');
    }
    el.open.focus();
  }

  document.addEventListener('DOMContentLoaded', async function () {
    el = {
      status: byId('status'), open: byId('token-open'),
      dialog: byId('token-dialog'), form: byId('token-form'), name: byId('token-name'),
      nameError: byId('token-name-error'), scopes: byId('token-scopes'),
      scopesError: byId('token-scopes-error'), submit: byId('token-submit'),
      cancel: byId('token-cancel'),
      createdDialog: byId('token-created-dialog'), createdName: byId('token-created-name'),
      createdId: byId('token-created-id'), createdScopes: byId('token-created-scopes'),
      createdSecret: byId('token-created-secret'),
    };
    list = B.listTable({
      path: '/api/v1/tokens', idField: 'token_id', issuedField: 'created_at', noun: 'token',
      columns: 6, table: byId('tokens'), body: byId('tokens-body'),
      summary: byId('tokens-summary'), listError: byId('list-error'), row: row,
    });
    openRevoke = B.revokeWindow({
      noun: 'token', idField: 'token_id', list: list, announce: announce, home: el.open,
      path: function (token) {
        return '/api/v1/tokens/' + encodeURIComponent(token.token_id) + '/revoke';
      },
      dialog: byId('token-revoke-dialog'), name: byId('token-revoke-name'),
      id: byId('token-revoke-id'), error: byId('token-revoke-error'),
      cancel: byId('token-revoke-cancel'), confirm: byId('token-revoke-confirm'),
    });
    showToken = B.secretWindow({
      dialog: el.createdDialog, secret: el.createdSecret, copy: byId('token-copy'),
      copyStatus: byId('token-copy-status'), confirm: byId('token-created-confirm'),
      facts: [el.createdName, el.createdId, el.createdScopes], onClosed: afterCreatedClosed,
    });
    B.trapFocus(el.dialog);

    el.open.addEventListener('click', openIssue);
    el.form.addEventListener('submit', submitIssue);
    el.cancel.addEventListener('click', function () { el.dialog.close(); });
    el.dialog.addEventListener('close', function () {
      if (el.dialog.open) return;  // reopened before this late 'close' task ran
      el.name.value = '';
      if (!el.createdDialog.open) el.open.focus();
    });

    await list.refresh();
  });
}());
