// ecod-jobs dashboard: starts the page named by <main data-batch-id> (empty: the batch list).
// A file, not an inline script, so the Content-Security-Policy allows scripts from 'self' only.
"use strict";

(() => {
  const root = document.getElementById("app");
  const batchId = root.dataset.batchId, itemId = root.dataset.itemId;
  if (batchId && itemId) ECOD.showItemLog(root, batchId, itemId, new URLSearchParams(location.search));
  else if (batchId) ECOD.watchBatch(root, batchId);
  else ECOD.watchBatches(root);
})();
