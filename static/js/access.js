// A private dashboard (--access-token): when the server refuses the page's session (it
// expired, or the server no longer has its token), the page reloads, and the server
// answers with the sign-in form. Once a minute at most: a server that refuses for another
// reason must not put the page into a reload loop.

export const UNAUTHORIZED = "unauthorized"; // the CONNECT_ERROR's message (transport/hooks.py)
export const AGAIN_MS = 60000;
const KEY = "random-stream.sign-in-at";

/** Whether a CONNECT_ERROR's data says the page has no good session. */
export function unauthorized(data) {
  return data?.message === UNAUTHORIZED;
}

/**
 * Reload to the sign-in form, unless this page did so less than AGAIN_MS ago (`storage`:
 * sessionStorage, which outlives the reload). Returns whether it reloads.
 */
export function toSignIn({ storage, reload, now }) {
  let last = 0;
  try {
    last = Number(storage?.getItem(KEY)) || 0;
  } catch {
    // storage refused (private mode): no memory of the last time, so no reload at all
    return false;
  }
  if (now - last < AGAIN_MS) {
    return false;
  }
  try {
    storage.setItem(KEY, String(now));
  } catch {
    return false;
  }
  reload();
  return true;
}
