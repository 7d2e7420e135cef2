"use strict";
// `digitlab serve --token`: the API then wants "Authorization: Bearer TOKEN". This wraps fetch for the page's
// own api/ requests: it sends the token kept in this tab's session, and on a 401 asks for it once and retries.
// A server without a token never answers 401, so nothing is asked.
(() => {
  const plainFetch = window.fetch.bind(window);
  const KEY = "digitlab-token";
  let asking = null; // one question at a time, whoever asks

  function withToken(init) {
    const token = sessionStorage.getItem(KEY);
    if (!token) return init;
    const headers = new Headers((init && init.headers) || {});
    headers.set("Authorization", `Bearer ${token}`);
    return { ...(init || {}), headers };
  }

  window.fetch = async (resource, init) => {
    const url = typeof resource === "string" ? resource : resource.url;
    if (!/^\/?api\//.test(url)) return plainFetch(resource, init);
    let response = await plainFetch(resource, withToken(init));
    if (response.status === 401) {
      asking = asking || Promise.resolve(window.prompt("This server wants its token:"));
      const token = await asking;
      asking = null;
      if (token) {
        sessionStorage.setItem(KEY, token.trim());
        response = await plainFetch(resource, withToken(init));
      }
    }
    return response;
  };
})();
