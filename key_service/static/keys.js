/* Manage API Keys: the list (a page at a time, with a search box), the Issue New Key / New API
   Key Created dialogs, the Roll dialog and the Revoke dialog (which warns when the key was used
   within the last day, and waits a few seconds for the revocation's receipt: docs/api.md).

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

  // How long ago, in words: "just now", "3 minutes ago", "2 hours ago", "5 days ago".
  const relative = new Intl.RelativeTimeFormat('en', { numeric: 'always' });
  const UNITS = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600],
    ['minute', 60]];
  const RECENT_SECONDS = 86400;

  function ago(value) {
    const seconds = Math.max(0, (Date.now() - new Date(value).getTime()) / 1000);
    for (const [unit, size] of UNITS) {
      if (seconds >= size) return relative.format(-Math.floor(seconds / size), unit);
    }
    return 'just now';
  }

  /** Last Used: "Never", or how long ago, the exact time in the title (shown on hover). */
  function lastUsedCell(key) {
    const td = document.createElement('td');
    td.className = 'cell-date';
    td.dataset.label = 'Last Used';
    if (!key.last_used_at) {
      td.textContent = 'Never';
      return td;
    }
    const time = B.timeElement(key.last_used_at, true);
    time.textContent = ago(key.last_used_at);
    td.appendChild(time);
    return td;
  }

  /** The Revoke window's warning: the key was used within the last day (as the list knew). */
  function showRecentUse(key) {
    const used = key.last_used_at;
    const recent = used && Date.now() - new Date(used).getTime() < RECENT_SECONDS * 1000;
    el.revokeRecent.hidden = !recent;
    el.revokeRecent.firstElementChild.textContent = recent
      ? 'This key was used ' + ago(used) + '.' : '';
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
    tr.appendChild(lastUsedCell(key));
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

  // -- the revocation's receipt ---------------------------------------------------------------
  // Seconds the Revoke dialog waits for every live gateway process to refuse the key.
  const RECEIPT_WAIT = 5;

  /** "Refused at all 4 gateway processes after 12 ms", or which have not confirmed yet. */
  function receiptText(receipt) {
    const n = receipt.processes;
    const noun = n === 1 ? 'process' : 'processes';
    let text;
    if (n === 0) {
      text = 'No gateway process is live.';
    } else if (receipt.confirmed === n) {
      text = 'Refused at ' + (n === 1 ? 'the one' : 'all ' + n) + ' gateway ' + noun +
        ' after ' + receipt.ms + ' ms.';
    } else {
      text = 'Refused at ' + receipt.confirmed + ' of ' + n + ' gateway ' + noun + ' after ' +
        receipt.ms + ' ms; not confirmed yet: ' +
        receipt.pending.map(function (p) { return p.name; }).join(', ') + '.';
    }
    if (receipt.gone.length) {
      text += ' Not heard from lately (not counted): ' +
        receipt.gone.map(function (p) { return p.name; }).join(', ') + '.';
    }
    return text;
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
      rollSubmit: byId('roll-submit'), revokeRecent: byId('revoke-recent'),
    };
    list = B.pagedTable({
      path: '/api/v1/keys', idField: 'key_id', noun: 'key', columns: 6,
      table: byId('keys'), body: el.body, summary: byId('keys-summary'),
      listError: byId('list-error'), row: row, more: byId('keys-more'),
      search: byId('key-search'),
    });
    const openRevokeWindow = B.revokeWindow({
      noun: 'key', idField: 'key_id', list: list, announce: announce, home: el.issueOpen,
      path: function (key) {
        return '/api/v1/keys/' + encodeURIComponent(key.key_id) + '/revoke?wait=' + RECEIPT_WAIT;
      },
      revokedMessage: function (revoked, answer) {
        const receipt = answer && answer.propagation;
        // No gateway has ever reported here (key_service on its own): nothing to say.
        if (!receipt || (receipt.processes === 0 && receipt.gone.length === 0)) return revoked;
        return revoked + ' ' + receiptText(receipt);
      },
      onExpired: function (key) { B.savePending({ action: 'revoke', key_id: key.key_id }); },
      dialog: byId('revoke-dialog'), name: byId('revoke-name'), id: byId('revoke-id'),
      error: byId('revoke-error'), cancel: byId('revoke-cancel'), confirm: byId('revoke-confirm'),
    });
    // The list may be minutes old: the window warns with what it knew at once, then with the
    // key as it is now, if the window is still open for it.
    let revokeShown = null;
    byId('revoke-dialog').addEventListener('close', function () {
      if (!byId('revoke-dialog').open) revokeShown = null;  // unless reopened meanwhile
    });
    openRevoke = function (key, invoker) {
      showRecentUse(key);
      openRevokeWindow(key, invoker);
      revokeShown = key.key_id;
      B.api('GET', '/api/v1/keys/' + encodeURIComponent(key.key_id)).then(function (now) {
        if (revokeShown === key.key_id) showRecentUse(now);
      }, function () { /* the list's value stands */ });
    };
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
