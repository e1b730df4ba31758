// ecod-jobs dashboard: starts the page named by <main data-batch-id> (empty: the batch list).
// A file, not an inline script, so the Content-Security-Policy allows scripts from 'self' only.
"use strict";

(() => {
  const root = document.getElementById("app");
  const batchId = root.dataset.batchId;
  if (batchId) ECOD.watchBatch(root, batchId);
  else ECOD.watchBatches(root);
})();
