/* Manage API Keys: the list, the Issue New Key / New API Key Created dialogs, the Roll dialog and
   the Revoke dialog.

   The secret of a new key lives only in the text of #created-secret while that dialog is open: no
   variable, attribute, storage, URL or history entry ever holds it, and Confirm empties the element. */
(function () {
  'use strict';

  const B = window.Backoffice;
  const PAGE_SIZE = 100;

  let el = {};
  let keys = [];
  let busy = false;
  let revokeTarget = null;
  let revokeInvoker = null;
  let rollTarget = null;
  let rollInvoker = null;

  function byId(id) {
    return document.getElementById(id);
  }

  // -- the list ------------------------------------------------------------------------------
  /** Revoked On: the date; for a rolled key still active, when it will be; else Active. */
  function revokedOnCell(key) {
    if (key.status === 'revoked' && key.revoked_at) return B.dateCell('Revoked On', key.revoked_at);
    const td = document.createElement('td');
    td.className = 'cell-status';
    td.dataset.label = 'Revoked On';
    if (key.revokes_at) {
      const pending = B.badge('badge-pending', 'Revokes on ');
      pending.appendChild(B.timeElement(key.revokes_at, true));
      td.appendChild(pending);
    } else {
      td.appendChild(B.badge('badge-active', 'Active'));
    }
    return td;
  }

  function actionButton(label, className, key, open) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn ' + className;
    button.textContent = label;
    button.setAttribute('aria-label', label + ' ' + key.name);
    button.addEventListener('click', function () { open(key, button); });
    return button;
  }

  function row(key) {
    const tr = document.createElement('tr');
    tr.dataset.keyId = key.key_id;
    const revoked = key.status === 'revoked';
    if (revoked) tr.className = 'is-revoked';
    tr.appendChild(B.textCell('Key Name', 'cell-name', key.name, false));
    tr.appendChild(B.textCell('Key ID', 'cell-id', key.key_id, true));
    tr.appendChild(B.dateCell('Issued On', key.issued_at));
    tr.appendChild(revokedOnCell(key));
    const action = document.createElement('td');
    action.className = 'cell-action';
    action.dataset.label = 'Revoke This Key';
    if (revoked) {
      // A revoked key cannot be revoked or reactivated: no button at all.
      action.classList.add('is-empty');
    } else {
      // A key is rolled once: a rolled key waiting for its revocation can only be revoked early.
      if (!key.replaced_by) action.appendChild(actionButton('Roll', 'btn-outline roll-button', key, openRoll));
      action.appendChild(actionButton('Revoke', 'btn-outline-danger revoke-button', key, openRevoke));
    }
    tr.appendChild(action);
    return tr;
  }

  function render() {
    const rows = keys.length
      ? keys.map(row)
      : [B.placeholderRow('No keys yet. Select Issue New Key to issue the first one.', 5)];
    el.body.replaceChildren.apply(el.body, rows);
    const active = keys.filter(function (k) { return k.status !== 'revoked'; }).length;
    el.summary.textContent = keys.length
      ? active + ' active, ' + (keys.length - active) + ' revoked.'
      : '';
  }

  /** Loads every page of the list, then renders it. */
  async function load() {
    keys = B.activeFirst(await B.loadAll('/api/v1/keys', PAGE_SIZE), 'key_id', 'issued_at');
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
    const replaced = created.replaced_key;
    el.createdRolled.hidden = !replaced;
    if (replaced) {
      el.createdRolled.replaceChildren(
        document.createTextNode('The old key keeps working until '),
        B.timeElement(replaced.revokes_at, true),
        document.createTextNode(', then it is revoked.'));
    }
    el.createdDialog.dataset.keyId = created.key_id;
    el.createdDialog.dataset.replaces = replaced ? replaced.key_id : '';
    el.createdDialog.showModal();
    el.copy.focus();
  }

  function forgetSecret() {
    B.forget([el.createdSecret, el.createdName, el.createdId, el.copyStatus, el.createdRolled]);
  }

  async function afterCreatedClosed() {
    const keyId = el.createdDialog.dataset.keyId || '';
    const rolled = Boolean(el.createdDialog.dataset.replaces);
    delete el.createdDialog.dataset.keyId;
    delete el.createdDialog.dataset.replaces;
    forgetSecret();
    if (await refresh()) {
      const created = keys.filter(function (k) { return k.key_id === keyId; })[0];
      announce(created ? 'Key “' + created.name + '” ' + (rolled ? 'rolled.' : 'issued.') : '');
    }
    el.issueOpen.focus();
  }

  // -- Roll ------------------------------------------------------------------------------------
  function overlapChoice() {
    const checked = el.rollForm.querySelector('input[name="overlap"]:checked');
    return checked ? Number(checked.value) : NaN;
  }

  function openRoll(key, invoker, overlap) {
    rollTarget = key;
    rollInvoker = invoker;
    el.rollForm.reset();
    if (overlap) {
      const choice = el.rollForm.querySelector('input[name="overlap"][value="' + overlap + '"]');
      if (choice) choice.checked = true;
    }
    el.rollName.textContent = key.name;
    el.rollId.textContent = key.key_id;
    el.rollError.hidden = true;
    announce('');
    el.rollDialog.showModal();
    const checked = el.rollForm.querySelector('input[name="overlap"]:checked');
    if (checked) checked.focus();
  }

  async function submitRoll(event) {
    event.preventDefault();
    if (busy || !rollTarget) return;
    const key = rollTarget;
    const overlap = overlapChoice();
    busy = true;
    el.rollSubmit.disabled = true;
    try {
      const created = await B.api('POST', '/api/v1/keys/' + encodeURIComponent(key.key_id) + '/roll',
        { overlap_seconds: overlap });
      rollInvoker = null;
      el.rollDialog.close();
      showCreated(created);
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.savePending({ action: 'roll', key_id: key.key_id, overlap: overlap });
        B.toLogin('expired');
      } else if (err instanceof B.ApiError && err.status === 409) {
        // Rolled or revoked elsewhere meanwhile: show the list as it is now.
        rollInvoker = null;
        el.rollDialog.close();
        await refresh();
        announce('Key “' + key.name + '” was not rolled: ' + err.message);
        el.issueOpen.focus();
      } else {
        el.rollError.textContent = 'Could not roll the key: ' + err.message;
        el.rollError.hidden = false;
      }
    } finally {
      busy = false;
      el.rollSubmit.disabled = false;
    }
  }

  function afterRollClosed() {
    rollTarget = null;
    el.rollName.textContent = '';
    el.rollId.textContent = '';
    if (rollInvoker && rollInvoker.isConnected) rollInvoker.focus();
    rollInvoker = null;
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
      return;
    }
    const key = keys.filter(function (k) { return k.key_id === pending.key_id; })[0];
    if (!key || key.status === 'revoked') return;
    const selector = 'tr[data-key-id="' + CSS.escape(key.key_id) + '"] ';
    if (pending.action === 'revoke') {
      openRevoke(key, el.body.querySelector(selector + '.revoke-button'));
    } else if (pending.action === 'roll' && !key.replaced_by) {
      openRoll(key, el.body.querySelector(selector + '.roll-button'), pending.overlap);
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
      createdRolled: byId('created-rolled'),
      rollDialog: byId('roll-dialog'), rollForm: byId('roll-form'), rollName: byId('roll-name'),
      rollId: byId('roll-id'), rollError: byId('roll-error'), rollCancel: byId('roll-cancel'),
      rollSubmit: byId('roll-submit'),
      revokeDialog: byId('revoke-dialog'), revokeName: byId('revoke-name'), revokeId: byId('revoke-id'),
      revokeError: byId('revoke-error'), revokeCancel: byId('revoke-cancel'),
      revokeConfirm: byId('revoke-confirm'),
    };
    [el.issueDialog, el.createdDialog, el.rollDialog, el.revokeDialog].forEach(B.trapFocus);

    el.issueOpen.addEventListener('click', function () { openIssue(''); });
    el.issueForm.addEventListener('submit', submitIssue);
    el.issueCancel.addEventListener('click', function () { el.issueDialog.close(); });
    el.issueDialog.addEventListener('close', function () {
      el.name.value = '';
      el.issueNotice.hidden = true;
      setNameError('');
      if (!el.createdDialog.open) el.issueOpen.focus();
    });

    el.copy.addEventListener('click', function () { B.copyText(el.createdSecret, el.copyStatus); });
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

    el.rollForm.addEventListener('submit', submitRoll);
    el.rollCancel.addEventListener('click', function () { el.rollDialog.close(); });
    el.rollDialog.addEventListener('close', afterRollClosed);

    el.revokeCancel.addEventListener('click', function () { el.revokeDialog.close(); });
    el.revokeConfirm.addEventListener('click', confirmRevoke);
    el.revokeDialog.addEventListener('close', afterRevokeClosed);

    el.table.setAttribute('aria-busy', 'true');
    if (await refresh()) resume();
  });
}());
