/* Manage API Keys: the list (a page at a time, with a search box), the Issue New Key / New API Key Created dialogs, the Roll dialog and
   the Revoke dialog.

   The secret of a new key lives only in the text of #created-secret while that dialog is open: no
   variable, attribute, storage, URL or history entry ever holds it, and Confirm empties the element. */
(function () {
  'use strict';

  const B = window.Backoffice;

  let el = {};
  let list = null;
  let openRevoke = null;
  let showSecret = null;
  let busy = false;
  let rollTarget = null;
  let rollInvoker = null;

  function byId(id) {
    return document.getElementById(id);
  }

  function announce(message) {
    el.status.textContent = message;
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
      if (!key.replaced_by) {
        action.appendChild(B.rowButton('Roll', 'btn-outline roll-button', 'Roll ' + key.name,
          function (button) { openRoll(key, button); }));
      }
      action.appendChild(B.rowButton('Revoke', 'btn-outline-danger revoke-button',
        'Revoke ' + key.name, function (button) { openRevoke(key, button); }));
    }
    tr.appendChild(action);
    return tr;
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
    const replaced = created.replaced_key;
    el.createdRolled.hidden = !replaced;
    if (replaced) {
      el.createdRolled.replaceChildren(
        document.createTextNode('The old key keeps working until '),
        B.timeElement(replaced.revokes_at, true),
        document.createTextNode(', then it is revoked.'));
    }
    el.createdDialog.dataset.name = created.name;
    el.createdDialog.dataset.replaces = replaced ? replaced.key_id : '';
    showSecret();
  }

  async function afterCreatedClosed() {
    const name = el.createdDialog.dataset.name || '';
    const rolled = Boolean(el.createdDialog.dataset.replaces);
    delete el.createdDialog.dataset.name;
    delete el.createdDialog.dataset.replaces;
    // Said even when a search leaves the new key out of the rows shown.
    if (await list.refresh()) announce('Key “' + name + '” ' + (rolled ? 'rolled.' : 'issued.'));
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
        await list.refresh();
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
    if (el.rollDialog.open) return;  // reopened before this late 'close' task ran
    rollTarget = null;
    el.rollName.textContent = '';
    el.rollId.textContent = '';
    if (rollInvoker && rollInvoker.isConnected) rollInvoker.focus();
    rollInvoker = null;
  }

  // -- after a login round trip: reopen what the user was doing --------------------------------
  async function resume() {
    const pending = B.takePending();
    if (!pending) return;
    if (pending.action === 'issue' && typeof pending.name === 'string') {
      openIssue(pending.name);
      setNameError('');
      el.issueNotice.textContent = 'Your session had expired. Check the name and select Issue Key again.';
      el.issueNotice.hidden = false;
      return;
    }
    // The key may be further down than the rows loaded: then it is read on its own.
    const key = list.find(pending.key_id) || await B.api('GET',
      '/api/v1/keys/' + encodeURIComponent(String(pending.key_id))).catch(function () { return null; });
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
      body: byId('keys-body'), status: byId('status'), issueOpen: byId('issue-open'),
      issueDialog: byId('issue-dialog'), issueForm: byId('issue-form'), name: byId('key-name'),
      nameError: byId('key-name-error'), issueSubmit: byId('issue-submit'),
      issueCancel: byId('issue-cancel'), issueNotice: byId('issue-notice'),
      createdDialog: byId('created-dialog'), createdName: byId('created-name'),
      createdId: byId('created-id'), createdSecret: byId('created-secret'),
      createdRolled: byId('created-rolled'),
      rollDialog: byId('roll-dialog'), rollForm: byId('roll-form'), rollName: byId('roll-name'),
      rollId: byId('roll-id'), rollError: byId('roll-error'), rollCancel: byId('roll-cancel'),
      rollSubmit: byId('roll-submit'),
    };
    list = B.pagedTable({
      path: '/api/v1/keys', idField: 'key_id', noun: 'key', columns: 5,
      table: byId('keys'), body: el.body, summary: byId('keys-summary'),
      listError: byId('list-error'), row: row, more: byId('keys-more'),
      search: byId('key-search'),
    });
    openRevoke = B.revokeWindow({
      noun: 'key', idField: 'key_id', list: list, announce: announce, home: el.issueOpen,
      path: function (key) { return '/api/v1/keys/' + encodeURIComponent(key.key_id) + '/revoke'; },
      onExpired: function (key) { B.savePending({ action: 'revoke', key_id: key.key_id }); },
      dialog: byId('revoke-dialog'), name: byId('revoke-name'), id: byId('revoke-id'),
      error: byId('revoke-error'), cancel: byId('revoke-cancel'), confirm: byId('revoke-confirm'),
    });
    showSecret = B.secretWindow({
      dialog: el.createdDialog, secret: el.createdSecret, copy: byId('copy-secret'),
      copyStatus: byId('copy-status'), confirm: byId('created-confirm'),
      facts: [el.createdName, el.createdId, el.createdRolled], onClosed: afterCreatedClosed,
    });
    [el.issueDialog, el.rollDialog].forEach(B.trapFocus);

    el.issueOpen.addEventListener('click', function () { openIssue(''); });
    el.issueForm.addEventListener('submit', submitIssue);
    el.issueCancel.addEventListener('click', function () { el.issueDialog.close(); });
    el.issueDialog.addEventListener('close', function () {
      // 'close' fires a task after close(); a user quick enough (Escape, then Enter at once) has
      // already reopened the dialog and typed into it, and that must not be wiped.
      if (el.issueDialog.open) return;
      el.name.value = '';
      el.issueNotice.hidden = true;
      setNameError('');
      if (!el.createdDialog.open) el.issueOpen.focus();
    });

    el.rollForm.addEventListener('submit', submitRoll);
    el.rollCancel.addEventListener('click', function () { el.rollDialog.close(); });
    el.rollDialog.addEventListener('close', afterRollClosed);

    if (await list.refresh()) await resume();
  });
}());
