'use strict';
/*
 * The whole voucher lifecycle driven by Voucherify's own npm SDK (@voucherify/sdk 2.9.0,
 * unchanged) against a running vouchercore server. Run by tests/http/test_node_sdk.py:
 *
 *   VOUCHERCORE_URL=http://127.0.0.1:PORT VOUCHERCORE_APP_ID=… VOUCHERCORE_APP_TOKEN=… node flow.js
 *
 * Every step goes through the SDK's own methods (2.9.0 calls the legacy
 * /v1/vouchers/{code}/validate and /redemption, the stackable /v1/validations and
 * /v1/redemptions, and posts a voucher without a code to /v1/vouchers/), except the export's
 * download: the SDK has no method for it, so the file is fetched from the export's result.url
 * with the same credentials, as an application would. Each step asserts its result; the first
 * mismatch prints what differed and exits 1. The server's book must be empty at the start.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');
const util = require('util');
const { VoucherifyServerSide } = require('@voucherify/sdk');

const baseUrl = required('VOUCHERCORE_URL');
const credentials = {
  'X-App-Id': required('VOUCHERCORE_APP_ID'),
  'X-App-Token': required('VOUCHERCORE_APP_TOKEN'),
};
const POLL_LIMIT_MS = Number(process.env.VOUCHERCORE_TEST_LIVENESS || '30') * 1000;

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`flow.js: set ${name}`);
    process.exit(2);
  }
  return value;
}

/*
 * Every JSON answer the SDK receives is read as text first: a number written with a fraction
 * or an exponent (`100.0`) fails the flow, since JSON.parse would hide it (100.0 === 100).
 * The hook is put into the defaults of the axios module the SDK itself loads, before the SDK
 * makes its client; it only looks at the text and hands it on unchanged.
 */
const axios = require(require.resolve('axios', {
  paths: [path.dirname(require.resolve('@voucherify/sdk'))],
}));
const NUMBER_OR_STRING = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
let answersRead = 0;
axios.defaults.transformResponse.unshift(function integersOnly(data) {
  if (typeof data === 'string') {
    answersRead += 1;
    for (const [token] of data.matchAll(NUMBER_OR_STRING)) {
      if (!token.startsWith('"') && !/^-?\d+$/.test(token)) {
        throw new Mismatch(`the server wrote the number ${token} (not an integer) in ${data}`);
      }
    }
  }
  return data;
});

const client = VoucherifyServerSide({
  applicationId: credentials['X-App-Id'],
  secretKey: credentials['X-App-Token'],
  apiUrl: baseUrl,
  exposeErrorCause: true,
});

// --- assertions -----------------------------------------------------------------------------

class Mismatch extends Error {}

function show(value) {
  return util.inspect(value, { depth: 6, breakLength: 100 });
}

/** actual deep-equals expected (every number on the wire is checked to be an integer above). */
function same(actual, expected, what) {
  if (!util.isDeepStrictEqual(actual, expected)) {
    throw new Mismatch(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

/** An amount: an integer (minor units) equal to expected. */
function amount(actual, expected, what) {
  if (!Number.isInteger(actual)) {
    throw new Mismatch(`${what}: expected the integer ${expected}, got ${show(actual)}`);
  }
  same(actual, expected, what);
}

function check(condition, what, actual) {
  if (!condition) {
    throw new Mismatch(`${what}${actual === undefined ? '' : `: got ${show(actual)}`}`);
  }
}

/** The call must fail with Voucherify's error object: `status` and the fields in `expected`. */
async function refused(call, status, expected, what) {
  let answer;
  try {
    answer = await call();
  } catch (problem) {
    if (problem instanceof Mismatch) throw problem;
    if (problem.code === undefined || problem.key === undefined) {
      throw new Mismatch(`${what}: expected a Voucherify error, got ${show(problem)}`);
    }
    same(problem.code, status, `${what}: the error's code (HTTP status)`);
    for (const [name, value] of Object.entries(expected)) {
      same(problem[name], value, `${what}: the error's ${name}`);
    }
    check(typeof problem.request_id === 'string', `${what}: the error has a request_id`);
    return problem;
  }
  throw new Mismatch(`${what}: expected HTTP ${status} ${show(expected)}, got ${show(answer)}`);
}

/** Poll `read` until `done(value)`; a liveness bound, not a timing assertion. */
async function waitFor(read, done, what) {
  const deadline = Date.now() + POLL_LIMIT_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) {
      throw new Mismatch(`${what}: not after ${POLL_LIMIT_MS} ms; last ${show(value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const steps = [];
function step(name, work) {
  steps.push([name, work]);
}

// --- the flow -------------------------------------------------------------------------------

const voucher = (id) => ({ object: 'voucher', id });
const amountOff = (code, off) => ({
  code, type: 'DISCOUNT_VOUCHER', discount: { type: 'AMOUNT', amount_off: off },
});

step('create a discount voucher with its code', async () => {
  const made = await client.vouchers.create({
    code: 'SUMMER-10',
    type: 'DISCOUNT_VOUCHER',
    discount: { type: 'PERCENT', percent_off: 10 },
    redemption: { quantity: 1 },
    metadata: { channel: 'web' },
  });
  same([made.code, made.type, made.active, made.object],
    ['SUMMER-10', 'DISCOUNT_VOUCHER', true, 'voucher'], 'the voucher');
  same(made.discount.type, 'PERCENT', 'discount.type');
  amount(made.discount.percent_off, 10, 'discount.percent_off');
  amount(made.redemption.quantity, 1, 'redemption.quantity');
  amount(made.redemption.redeemed_quantity, 0, 'redemption.redeemed_quantity');
  same(made.metadata, { channel: 'web' }, 'metadata');
  const found = await client.vouchers.get('SUMMER-10');
  same(found.id, made.id, 'the voucher read back');
});

step('create a voucher with a generated code (POST /v1/vouchers/)', async () => {
  const made = await client.vouchers.create({
    type: 'DISCOUNT_VOUCHER',
    discount: { type: 'AMOUNT', amount_off: 300 },
    code_config: { pattern: 'SPRING-####', charset: 'ABCDEF' },
  });
  check(/^SPRING-[A-F]{4}$/.test(made.code), 'a code of the pattern SPRING-#### from ABCDEF', made.code);
  amount((await client.vouchers.get(made.code)).discount.amount_off, 300, 'its amount_off read back');
});

step('validate with a LOCK session (legacy /validate)', async () => {
  const locked = await client.validations.validateVoucher('SUMMER-10', {
    order: { amount: 12000 },
    session: { type: 'LOCK', key: 'cart-1', ttl: 10, ttl_unit: 'MINUTES' },
  });
  same([locked.valid, locked.code], [true, 'SUMMER-10'], 'the validation');
  amount(locked.order.amount, 12000, 'order.amount');
  amount(locked.order.discount_amount, 1200, 'order.discount_amount');
  amount(locked.order.total_amount, 10800, 'order.total_amount');
  same(locked.session, { key: 'cart-1', type: 'LOCK', ttl: 10, ttl_unit: 'MINUTES' }, 'the session');
  // validations.validate(code, context) is the same call
  const again = await client.validations.validate('SUMMER-10', {
    order: { amount: 12000 },
    session: { type: 'LOCK', key: 'cart-1' },
  });
  same([again.valid, again.session.key], [true, 'cart-1'], 'the same cart validating again');
});

step('a competing validation and redemption are refused because of the lock', async () => {
  const competing = await client.validations.validateVoucher('SUMMER-10', { order: { amount: 5000 } });
  same(competing.valid, false, 'the competing validation');
  same(competing.error.key, 'quantity_exceeded', 'its error key');
  check(typeof competing.reason === 'string' && competing.reason.length > 0, 'it gives a reason', competing.reason);
  await refused(
    () => client.redemptions.redeem('SUMMER-10', { order: { amount: 5000 } }),
    400, { key: 'quantity_exceeded' }, 'a redemption without the key',
  );
});

const state = {};

step('redeem with the session key (legacy /redemption)', async () => {
  const redeemed = await client.redemptions.redeem('SUMMER-10', {
    order: { amount: 12000 },
    session: { key: 'cart-1' },
    metadata: { till: 3 },
  });
  same([redeemed.object, redeemed.result, redeemed.status], ['redemption', 'SUCCESS', 'SUCCEEDED'], 'the redemption');
  amount(redeemed.amount, 1200, 'the redemption amount');
  amount(redeemed.order.amount, 12000, 'its order amount');
  same(redeemed.metadata, { till: 3 }, 'its metadata');
  same(redeemed.voucher.code, 'SUMMER-10', 'its voucher');
  amount(redeemed.voucher.redemption.redeemed_quantity, 1, 'the voucher after it: redeemed_quantity');
  state.redemption = redeemed.id;

  const found = await client.redemptions.get(redeemed.id);
  same([found.id, found.status], [redeemed.id, 'SUCCEEDED'], 'the redemption read back');
  const log = await client.redemptions.getForVoucher('SUMMER-10');
  // newest first; the refused attempt without the key is logged as a failed redemption
  same(log.redemption_entries.map((entry) => [entry.id === redeemed.id, entry.status, entry.failure_code]),
    [[true, 'SUCCEEDED', null], [false, 'FAILED', 'quantity_exceeded']], "the voucher's redemption log");
  amount(log.redeemed_quantity, 1, "the log's redeemed_quantity");
  await refused(
    () => client.redemptions.redeem('SUMMER-10', { order: { amount: 12000 }, session: { key: 'cart-1' } }),
    400, { key: 'quantity_exceeded' }, 'a second redemption with the spent key',
  );
});

step('roll the redemption back', async () => {
  const undone = await client.redemptions.rollback(state.redemption, 'returned');
  same([undone.object, undone.redemption, undone.reason, undone.status],
    ['redemption_rollback', state.redemption, 'returned', 'SUCCEEDED'], 'the rollback');
  amount(undone.amount, -1200, 'the rollback amount');
  amount((await client.vouchers.get('SUMMER-10')).redemption.redeemed_quantity, 0, 'redeemed_quantity after it');
  same((await client.redemptions.get(state.redemption)).status, 'ROLLED_BACK', 'the redemption after it');
  await refused(
    () => client.redemptions.rollback(state.redemption, { reason: 'again' }),
    400, { key: 'already_rolled_back' }, 'a second rollback',
  );
  const reusable = await client.validations.validateVoucher('SUMMER-10', { order: { amount: 1000 } });
  same(reusable.valid, true, 'the voucher is usable again');
});

step('release a gift card lock, then the released key is gone', async () => {
  const card = await client.vouchers.create({ code: 'GIFT-50', type: 'GIFT_VOUCHER', gift: { amount: 5000 } });
  amount(card.gift.amount, 5000, 'gift.amount');
  amount(card.gift.balance, 5000, 'gift.balance');
  const locked = await client.validations.validateVoucher('GIFT-50', {
    order: { amount: 9000 }, gift: { credits: 5000 }, session: { type: 'LOCK' },
  });
  same(locked.valid, true, 'the locking validation');
  amount(locked.gift.credits, 5000, 'gift.credits');
  check(/^ssn_/.test(locked.session.key), 'a generated session key ssn_…', locked.session.key);
  const some = { order: { amount: 9000 }, gift: { credits: 100 } };
  const refusedNow = await client.validations.validateVoucher('GIFT-50', some);
  same([refusedNow.valid, refusedNow.error.key], [false, 'gift_amount_exceeded'], 'a validation past the lock');

  await client.vouchers.releaseValidationSession('GIFT-50', locked.session.key);
  const freed = await client.validations.validateVoucher('GIFT-50', some);
  same(freed.valid, true, 'the validation after the release');
  await refused(
    () => client.vouchers.releaseValidationSession('GIFT-50', locked.session.key),
    404, { key: 'not_found', resource_type: 'session' }, 'releasing the key again',
  );
});

step("change a gift card's balance", async () => {
  const added = await client.vouchers.balance.create('GIFT-50', { amount: 1500, reason: 'goodwill' });
  same([added.type, added.object], ['gift_voucher', 'balance'], 'the balance update');
  amount(added.amount, 1500, 'the added amount');
  amount(added.balance, 6500, 'the balance after it');
  const removed = await client.vouchers.balance.create('GIFT-50', { amount: -500 });
  amount(removed.amount, -500, 'the removed amount');
  amount(removed.balance, 6000, 'the balance after it');
  await refused(
    () => client.vouchers.balance.create('GIFT-50', { amount: -7000 }),
    400, { key: 'invalid_add_balance_params' }, 'removing more than the balance',
  );
  amount((await client.vouchers.get('GIFT-50')).gift.balance, 6000, 'the balance read back');
});

step('list the transactions page by page', async () => {
  const newest = await client.vouchers.listTransactions('GIFT-50', { limit: 1 });
  same(newest.data.map((tx) => tx.type), ['CREDITS_REMOVAL'], 'the newest transaction');
  same(newest.has_more, true, 'has_more');
  amount(newest.data[0].details.balance.balance, 6000, 'the balance after it');
  amount(newest.data[0].details.balance.amount, -500, 'its amount');
  const older = await client.vouchers.listTransactions('GIFT-50', {
    limit: 10, starting_after_id: newest.more_starting_after,
  });
  same(older.data.map((tx) => [tx.type, tx.reason]), [['CREDITS_ADDITION', 'goodwill']], 'the older page');
  same(older.has_more, false, "the older page's has_more");
  const oldestFirst = await client.vouchers.listTransactions('GIFT-50', { order: 'id' });
  same(oldestFirst.data.map((tx) => tx.id), [older.data[0].id, newest.data[0].id], 'oldest first');
  state.transactions = oldestFirst.data.map((tx) => tx.id);
});

step('export the transactions and download the file', async () => {
  const scheduled = await client.vouchers.exportTransactions('GIFT-50', {
    parameters: { order: 'created_at', fields: ['id', 'type', 'amount', 'balance'] },
  });
  same([scheduled.object, scheduled.status, scheduled.exported_object],
    ['export', 'SCHEDULED', 'voucher_transactions'], 'the export');
  const done = await waitFor(
    () => client.distributions.exports.get(scheduled.id),
    (found) => found.status !== 'SCHEDULED' && found.status !== 'IN_PROGRESS',
    'the export is done',
  );
  same(done.status, 'DONE', "the export's status");
  // the SDK has no download method: the file is at result.url, behind the same credentials
  const response = await fetch(done.result.url, { headers: credentials });
  same(response.status, 200, "the download's HTTP status");
  const rows = (await response.text()).trim().split(/\r?\n/).map((line) => line.split(','));
  same(rows, [
    ['id', 'type', 'amount', 'balance'],
    [state.transactions[0], 'CREDITS_ADDITION', '1500', '6500'],
    [state.transactions[1], 'CREDITS_REMOVAL', '-500', '6000'],
  ], 'the exported rows');
  const anonymous = await fetch(done.result.url);
  same(anonymous.status, 401, 'the download without credentials');
});

step('import vouchers from a CSV file through an async action', async () => {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'vouchercore-flow-'));
  const file = path.join(folder, 'vouchers.csv');
  fs.writeFileSync(file,
    'Code,Voucher Type,Value,Discount Type,Redemption Limit,Category\n'
    + 'IMP-1,DISCOUNT_VOUCHER,500,AMOUNT,3,spring\n'
    + 'IMP-2,GIFT_VOUCHER,2000,,,\n'
    + 'IMP-3,SPACESHIP,1,AMOUNT,,\n');
  try {
    const accepted = await client.vouchers.importCSV(file);
    check(/^aa_/.test(accepted.async_action_id), 'an async action id aa_…', accepted);
    const done = await waitFor(
      () => client.asyncActions.get(accepted.async_action_id),
      (found) => found.status === 'DONE' || found.status === 'FAILED',
      'the import is done',
    );
    same([done.object, done.type, done.status], ['async_action', 'VOUCHERS.IMPORT_CSV', 'DONE'], 'the async action');
    amount(done.progress, 100, 'its progress');
    amount(done.result.done_count, 2, 'done_count');
    amount(done.result.failed_count, 1, 'failed_count');
    same(done.result.failed.map((row) => [row.code, row.row]), [['IMP-3', 3]], 'the failed rows');
    check(done.result.failed[0].reason.includes('SPACESHIP'), 'the failure names the bad type', done.result.failed[0]);
  } finally {
    fs.rmSync(folder, { recursive: true, force: true });
  }
  const imported = await client.vouchers.get('IMP-1');
  amount(imported.discount.amount_off, 500, "IMP-1's amount_off");
  amount(imported.redemption.quantity, 3, "IMP-1's quantity");
  same(imported.category, 'spring', "IMP-1's category");
  amount((await client.vouchers.get('IMP-2')).gift.balance, 2000, "IMP-2's balance");
  await refused(() => client.vouchers.get('IMP-3'), 404, { key: 'not_found' }, 'the failed row');
});

step('disable and enable a voucher', async () => {
  await client.vouchers.create(amountOff('OFF-5', 500));
  same((await client.vouchers.disable('OFF-5')).active, false, 'disabled');
  const refusedNow = await client.validations.validateVoucher('OFF-5', { order: { amount: 2000 } });
  same([refusedNow.valid, refusedNow.error.key], [false, 'voucher_disabled'], 'validating it');
  same((await client.vouchers.enable('OFF-5')).active, true, 'enabled');
  const accepted = await client.validations.validateVoucher('OFF-5', { order: { amount: 2000 } });
  same(accepted.valid, true, 'validating it again');
  amount(accepted.order.total_amount, 1500, 'its total_amount');
  // vouchers.update: only `active` can change on vouchercore
  same((await client.vouchers.update({ code: 'OFF-5', active: false })).active, false, 'disabled by update');
  same((await client.vouchers.update({ code: 'OFF-5', active: true })).active, true, 'enabled by update');
  await refused(
    () => client.vouchers.update({ code: 'OFF-5', category: 'new' }),
    400, { key: 'invalid_payload' }, 'an update of another field',
  );
});

step('delete a voucher, then force-delete it and reuse its code', async () => {
  await client.vouchers.delete('OFF-5');
  await refused(() => client.vouchers.get('OFF-5'), 404, { key: 'not_found' }, 'reading it');
  await refused(
    () => client.vouchers.create(amountOff('OFF-5', 1)),
    409, { key: 'duplicate_found' }, 'creating its code again (a soft delete keeps it)',
  );
  await client.vouchers.delete('OFF-5', { force: true });
  const again = await client.vouchers.create(amountOff('OFF-5', 700));
  amount(again.discount.amount_off, 700, 'the new voucher of the code');
});

step('validate, redeem and roll back a discount and a gift card stacked', async () => {
  await client.vouchers.create(amountOff('TEN-OFF', 1000));
  await client.vouchers.create({ code: 'CARD-1', type: 'GIFT_VOUCHER', gift: { amount: 3000 } });
  const redeemables = [voucher('TEN-OFF'), voucher('CARD-1')];
  const order = { id: 'order-7', amount: 2500, metadata: { store: 'north' } };

  const checked = await client.validations.validateStackable({
    redeemables, order, customer: { source_id: 'cust-1' },
    session: { type: 'LOCK', key: 'pos-7', ttl: 5, ttl_unit: 'MINUTES' },
  });
  same(checked.valid, true, 'the stacked validation');
  same(checked.redeemables.map((item) => [item.id, item.status]),
    [['TEN-OFF', 'APPLICABLE'], ['CARD-1', 'APPLICABLE']], 'its redeemables');
  amount(checked.redeemables[1].result.gift.credits, 1500, "the gift card's credits");
  amount(checked.order.discount_amount, 1000, 'order.discount_amount');
  amount(checked.order.total_amount, 0, 'order.total_amount');
  same(checked.session.key, 'pos-7', 'the session');
  const limit = checked.stacking_rules.redeemables_limit;
  check(Number.isInteger(limit) && limit >= redeemables.length, 'stacking_rules.redeemables_limit', limit);

  const competing = await client.validations.validateStackable({
    redeemables: [voucher('CARD-1')], order: { amount: 3000 },
  });
  same(competing.valid, true, 'another cart may take what the lock left');
  amount(competing.redeemables[0].result.gift.credits, 1500, "what is left of the card's balance");

  const redeemed = await client.redemptions.redeemStackable({
    redeemables, order, customer: { source_id: 'cust-1' }, session: { key: 'pos-7' }, metadata: { till: 3 },
  });
  const parent = redeemed.parent_redemption;
  same([parent.status, parent.result, parent.order.id, parent.customer.source_id],
    ['SUCCEEDED', 'SUCCESS', 'order-7', 'cust-1'], 'the parent redemption');
  amount(parent.amount, 2500, "the parent's amount");
  same(redeemed.redemptions.map((child) => [child.voucher.code, child.redemption]),
    [['TEN-OFF', parent.id], ['CARD-1', parent.id]], 'the children');
  redeemed.redemptions.forEach((child, index) => amount(child.amount, [1000, 1500][index], `child ${index}'s amount`));
  amount(redeemed.order.total_amount, 0, "the redemption's order total");
  amount((await client.vouchers.get('CARD-1')).gift.balance, 1500, "the card's balance after it");
  same((await client.redemptions.get(parent.id)).related_redemptions.redemptions.map((child) => child.id),
    redeemed.redemptions.map((child) => child.id), 'the parent read back');

  await refused(
    () => client.redemptions.rollback(redeemed.redemptions[0].id),
    400, { key: 'invalid_redemption' }, 'rolling one child back alone',
  );
  const rolled = await client.redemptions.rollbackStackable(parent.id, { reason: 'cancelled' });
  same([rolled.parent_rollback.redemption, rolled.parent_rollback.reason],
    [parent.id, 'cancelled'], 'the parent rollback');
  same(rolled.rollbacks.map((child) => child.redemption).sort(),
    redeemed.redemptions.map((child) => child.id).sort(), 'the child rollbacks');
  amount((await client.vouchers.get('CARD-1')).gift.balance, 3000, "the card's balance after the rollback");
  same((await client.redemptions.get(parent.id)).status, 'ROLLED_BACK', 'the parent after the rollback');
});

step('a request with the wrong credentials gets 401', async () => {
  const stranger = VoucherifyServerSide({
    applicationId: credentials['X-App-Id'], secretKey: 'wrong', apiUrl: baseUrl,
  });
  await refused(() => stranger.vouchers.get('SUMMER-10'), 401, { key: 'unauthorized' }, 'a wrong token');
});

async function main() {
  for (const [name, work] of steps) {
    try {
      await work();
    } catch (problem) {
      const why = problem instanceof Mismatch
        ? problem.message
        : `unexpected ${problem && problem.name}: ${problem && problem.message}`
          + (problem && problem.key ? ` (HTTP ${problem.code} ${problem.key}, details ${show(problem.details)})` : '')
          + `\n${problem && problem.stack}`;
      console.error(`FAILED at step "${name}": ${why}`);
      process.exitCode = 1;
      return;
    }
    console.log(`ok - ${name}`);
  }
  if (answersRead === 0) {
    console.error('FAILED: no answer went through the integer check (the axios hook is not in use)');
    process.exitCode = 1;
    return;
  }
  console.log(`all ${steps.length} steps passed; ${answersRead} answers read as text, every number an integer`);
}

main();
