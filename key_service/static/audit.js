/* Audit Log: one page of the log at a time, newest first, with Newer and Older to move between
   pages. The API's cursors only go towards older rows, so the cursors of the pages already seen
   are kept to go back. */
(function () {
  'use strict';

  const B = window.Backoffice;
  const PAGE_SIZE = 25;
  const ACTIONS = {
    'key.issued': 'Issued key',
    'key.rolled': 'Rolled key',
    'key.revoked': 'Revoked key',
    'token.created': 'Issued token',
    'token.revoked': 'Revoked token',
  };
  const KINDS = { user: 'person', token: 'management token', system: 'scheduled' };

  let el = {};
  // cursors[i] is the cursor that loads page i (null for the first, newest page).
  let cursors = [null];
  let index = 0;
  let next = null;
  let loading = false;

  function byId(id) {
    return document.getElementById(id);
  }

  function whoCell(entry) {
    const td = document.createElement('td');
    td.className = 'cell-name';
    td.dataset.label = 'Who';
    td.appendChild(document.createTextNode(entry.actor + ' '));
    const kind = B.badge('badge-kind', KINDS[entry.actor_type] || entry.actor_type);
    if (entry.actor_token_id) kind.title = 'Token ID ' + entry.actor_token_id;
    td.appendChild(kind);
    return td;
  }

  function row(entry) {
    const tr = document.createElement('tr');
    tr.dataset.auditId = String(entry.id);
    tr.appendChild(B.dateCell('When', entry.at, true));
    tr.appendChild(whoCell(entry));
    tr.appendChild(B.textCell('What', 'cell-what', ACTIONS[entry.action] || entry.action, false));
    tr.appendChild(B.textCell('Key or Token', 'cell-id', entry.key_id || entry.token_id || '', true));
    return tr;
  }

  async function show(target) {
    if (loading) return;
    loading = true;
    el.table.setAttribute('aria-busy', 'true');
    try {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (cursors[target]) query.set('cursor', cursors[target]);
      const page = await B.api('GET', '/api/v1/audit?' + query.toString());
      index = target;
      next = page.next_cursor;
      cursors = cursors.slice(0, index + 1);
      const rows = page.items.length
        ? page.items.map(row)
        : [B.placeholderRow('Nothing has been changed yet.', 4)];
      el.body.replaceChildren.apply(el.body, rows);
      el.listError.hidden = true;
      el.newer.disabled = index === 0;
      el.older.disabled = !next;
      el.summary.textContent = page.items.length
        ? 'Page ' + (index + 1) + ': entries ' + (index * PAGE_SIZE + 1) + ' to '
          + (index * PAGE_SIZE + page.items.length) + (next ? '.' : ', the oldest.')
        : '';
    } catch (err) {
      if (err instanceof B.SessionExpired) {
        B.toLogin('expired');
      } else {
        el.listError.textContent = 'Could not load the audit log: ' + err.message;
        el.listError.hidden = false;
      }
    } finally {
      loading = false;
      el.table.setAttribute('aria-busy', 'false');
    }
  }

  /** After a button turned itself off (the last page either way), keep the focus on the page. */
  function keepFocus(button, other) {
    if (document.activeElement === button && button.disabled) {
      (other.disabled ? el.main : other).focus();
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    el = {
      table: byId('audit'), body: byId('audit-body'), summary: byId('audit-summary'),
      listError: byId('list-error'), newer: byId('audit-newer'), older: byId('audit-older'),
      main: byId('main'),
    };
    el.older.addEventListener('click', async function () {
      if (!next) return;
      cursors[index + 1] = next;
      await show(index + 1);
      keepFocus(el.older, el.newer);
    });
    el.newer.addEventListener('click', async function () {
      if (index === 0) return;
      await show(index - 1);
      keepFocus(el.newer, el.older);
    });
    show(0);
  });
}());
