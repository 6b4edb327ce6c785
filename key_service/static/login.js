/* The login form: POST /api/v1/session, then back to the page that sent the user here. */
(function () {
  'use strict';

  const RETURN_PATH = /^\/backoffice\/[A-Za-z0-9._~\-\/]*$/;

  function safeReturnPath(path) {
    return typeof path === 'string' && RETURN_PATH.test(path) && path.indexOf('//') === -1
      && path !== '/backoffice/login' ? path : '/backoffice/';
  }

  function showError(message) {
    const box = document.getElementById('login-error');
    box.textContent = message;
    box.hidden = false;
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const username = document.getElementById('username');
    const password = document.getElementById('password');
    const button = document.getElementById('login-submit');
    document.getElementById('login-error').hidden = true;
    if (!username.value.trim() || !password.value) {
      showError('Enter your username and password.');
      (username.value.trim() ? password : username).focus();
      return;
    }
    button.disabled = true;
    try {
      const resp = await fetch('/api/v1/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
        credentials: 'same-origin',
        cache: 'no-store',
        body: JSON.stringify({ username: username.value.trim(), password: password.value }),
      });
      if (resp.ok) {
        password.value = '';
        // replace(): the login page is not kept in history, so Back does not return to it.
        window.location.replace(safeReturnPath(form.dataset.next));
        return;
      }
      if (resp.status === 401) {
        showError('Incorrect username or password.');
      } else if (resp.status === 429) {
        const wait = parseInt(resp.headers.get('Retry-After') || '', 10);
        showError('Too many login attempts. Try again in '
          + (Number.isFinite(wait) ? wait + ' seconds.' : 'a moment.'));
      } else {
        let detail = '';
        try {
          detail = (await resp.json()).detail || '';
        } catch (err) {
          detail = '';
        }
        showError(detail ? 'Could not log in: ' + detail : 'Could not log in (HTTP ' + resp.status + ').');
      }
      password.value = '';
      password.focus();
    } catch (err) {
      showError('Could not reach the server. Check your connection and try again.');
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.getElementById('login-form').addEventListener('submit', submit);
  });
}());
