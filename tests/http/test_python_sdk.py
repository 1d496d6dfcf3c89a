"""The whole voucher lifecycle driven by Voucherify's own PyPI SDK (``voucherify`` 6.1.1),
unchanged, against a real uvicorn server on 127.0.0.1 — on the in-memory store (engine called
from the event loop) and on a SQLite file (engine called in worker threads)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import voucherify as sdk
from voucherify import models

from tests.http.conftest import APP_ID, APP_TOKEN, wait_for
from vouchercore import Engine


@pytest.fixture
def api(base_url: str) -> Iterator[sdk.ApiClient]:
    """The SDK's client, configured as its README says, pointed at the server."""
    configuration = sdk.Configuration(
        host=base_url, api_key={"X-App-Id": APP_ID, "X-App-Token": APP_TOKEN}
    )
    with sdk.ApiClient(configuration) as client:
        yield client


def _refusal(error: sdk.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def _create(vouchers: sdk.VouchersApi, code: str, **body: Any) -> Any:
    request = models.VouchersCreateWithSpecificCodeRequestBody.from_dict(body)
    return vouchers.create_voucher(code, request)


def _validate(validations: sdk.ValidationsApi, **body: Any) -> Any:
    return validations.validate_stacked_discounts(
        models.ValidationsValidateRequestBody.from_dict(body)
    )


def _redeem(redemptions: sdk.RedemptionsApi, **body: Any) -> Any:
    return redemptions.redeem_stacked_discounts(models.RedemptionsRedeemRequestBody.from_dict(body))


def test_a_discount_code_is_created_locked_refused_to_others_redeemed_with_its_key_and_rolled_back(
    api: sdk.ApiClient, served_engine: Engine
) -> None:
    vouchers, validations, redemptions = (
        sdk.VouchersApi(api),
        sdk.ValidationsApi(api),
        sdk.RedemptionsApi(api),
    )
    made = _create(
        vouchers,
        "SUMMER-10",
        type="DISCOUNT_VOUCHER",
        discount={"type": "PERCENT", "percent_off": 10},
        redemption={"quantity": 1},
        metadata={"channel": "web"},
    )
    assert (made.code, made.type, made.discount.percent_off, made.active) == (
        "SUMMER-10",
        "DISCOUNT_VOUCHER",
        10,
        True,
    )
    assert made.redemption.quantity == 1 and made.metadata == {"channel": "web"}

    mine = {"object": "voucher", "id": "SUMMER-10"}
    locked = _validate(
        validations,
        redeemables=[mine],
        order={"amount": 12_000},
        session={"type": "LOCK", "key": "cart-1", "ttl": 10, "ttl_unit": "MINUTES"},
    )
    assert locked.valid is True
    assert (locked.session.key, locked.session.type, locked.session.ttl) == ("cart-1", "LOCK", 10)
    assert (locked.order.amount, locked.order.discount_amount, locked.order.total_amount) == (
        12_000,
        1_200,
        10_800,
    )
    assert locked.redeemables[0].status == "APPLICABLE"
    assert locked.stacking_rules.redeemables_limit == served_engine.stacking_rules.redeemables_limit

    # another cart: the only redemption is held by cart-1's lock
    competing = _validate(validations, redeemables=[mine], order={"amount": 5_000})
    assert competing.valid is False
    refused = competing.redeemables[0]
    assert (refused.status, refused.result.error.key) == ("INAPPLICABLE", "quantity_exceeded")
    assert competing.inapplicable_redeemables[0].id == "SUMMER-10"
    with pytest.raises(sdk.ApiException) as blocked:
        _redeem(redemptions, redeemables=[mine], order={"amount": 5_000})
    assert (blocked.value.status, _refusal(blocked.value)["key"]) == (400, "quantity_exceeded")

    redeemed = _redeem(
        redemptions, redeemables=[mine], order={"amount": 12_000}, session={"key": "cart-1"}
    )
    parent = redeemed.parent_redemption
    (child,) = redeemed.redemptions
    assert (parent.status, parent.result, parent.amount) == ("SUCCEEDED", "SUCCESS", 1_200)
    assert (child.redemption, child.amount, child.voucher.code) == (parent.id, 1_200, "SUMMER-10")
    assert redeemed.order.total_amount == 10_800
    assert vouchers.get_voucher("SUMMER-10").redemption.redeemed_quantity == 1

    assert redemptions.get_redemption(parent.id).status == "SUCCEEDED"
    assert redemptions.get_redemption(child.id).redemption == parent.id
    log = redemptions.get_voucher_redemptions("SUMMER-10")
    assert [entry.id for entry in log.redemption_entries] == [child.id]

    undone = redemptions.rollback_redemption(parent.id, reason="returned")
    assert (undone.redemption, undone.reason, undone.status) == (parent.id, "returned", "SUCCEEDED")
    assert vouchers.get_voucher("SUMMER-10").redemption.redeemed_quantity == 0
    assert redemptions.get_redemption(child.id).status == "ROLLED_BACK"
    with pytest.raises(sdk.ApiException) as twice:
        redemptions.rollback_redemption(parent.id)
    assert _refusal(twice.value)["key"] == "already_rolled_back"
    assert served_engine.audit().ok


def test_a_gift_card_lock_is_released_its_balance_changed_and_its_transactions_listed_and_exported(
    api: sdk.ApiClient, served_engine: Engine
) -> None:
    vouchers, validations, exports = (
        sdk.VouchersApi(api),
        sdk.ValidationsApi(api),
        sdk.ExportsApi(api),
    )
    card = _create(vouchers, "GIFT-50", type="GIFT_VOUCHER", gift={"amount": 5_000})
    assert (card.gift.amount, card.gift.balance) == (5_000, 5_000)
    whole = [{"object": "voucher", "id": "GIFT-50", "gift": {"credits": 5_000}}]
    some = [{"object": "voucher", "id": "GIFT-50", "gift": {"credits": 100}}]

    locked = _validate(
        validations, redeemables=whole, order={"amount": 9_000}, session={"type": "LOCK"}
    )
    assert locked.valid is True
    key = locked.session.key
    assert key.startswith("ssn_")
    refused = _validate(validations, redeemables=some, order={"amount": 9_000})
    assert (refused.valid, refused.redeemables[0].result.error.key) == (
        False,
        "gift_amount_exceeded",
    )
    vouchers.release_validation_session("GIFT-50", key)
    assert _validate(validations, redeemables=some, order={"amount": 9_000}).valid is True
    with pytest.raises(sdk.ApiException) as gone:
        vouchers.release_validation_session("GIFT-50", key)
    assert (gone.value.status, _refusal(gone.value)["resource_type"]) == (404, "session")

    added = vouchers.update_voucher_balance(
        "GIFT-50", models.VouchersBalanceUpdateRequestBody(amount=1_500, reason="goodwill")
    )
    assert (added.amount, added.balance, added.type, added.object) == (
        1_500,
        6_500,
        "gift_voucher",
        "balance",
    )
    removed = vouchers.update_voucher_balance(
        "GIFT-50", models.VouchersBalanceUpdateRequestBody(amount=-500)
    )
    assert removed.balance == 6_000
    with pytest.raises(sdk.ApiException) as too_much:
        vouchers.update_voucher_balance(
            "GIFT-50", models.VouchersBalanceUpdateRequestBody(amount=-7_000)
        )
    assert _refusal(too_much.value)["key"] == "invalid_add_balance_params"

    newest = vouchers.list_voucher_transactions("GIFT-50", limit=1)
    assert [tx.type for tx in newest.data] == ["CREDITS_REMOVAL"]
    assert newest.has_more is True
    assert newest.data[0].details.balance.balance == 6_000
    older = vouchers.list_voucher_transactions(
        "GIFT-50", limit=10, starting_after_id=newest.more_starting_after
    )
    assert [tx.type for tx in older.data] == ["CREDITS_ADDITION"]
    assert older.data[0].reason == "goodwill" and older.has_more is False
    oldest_first = vouchers.list_voucher_transactions("GIFT-50", order="id")
    assert [tx.id for tx in oldest_first.data] == [older.data[0].id, newest.data[0].id]

    scheduled = vouchers.export_voucher_transactions(
        "GIFT-50",
        models.VouchersTransactionsExportCreateRequestBody.from_dict(
            {"parameters": {"order": "created_at", "fields": ["id", "type", "amount", "balance"]}}
        ),
    )
    assert (scheduled.status, scheduled.exported_object) == ("SCHEDULED", "voucher_transactions")
    done = wait_for(
        lambda: (found := exports.get_export(scheduled.id)).status == "DONE" and found,
        "the export is done",
    )
    token = done.result.url.split("token=", 1)[1]
    rows = list(csv.reader(io.StringIO(exports.download_export(scheduled.id, token=token))))
    assert rows == [
        ["id", "type", "amount", "balance"],
        [older.data[0].id, "CREDITS_ADDITION", "1500", "6500"],
        [newest.data[0].id, "CREDITS_REMOVAL", "-500", "6000"],
    ]
    assert served_engine.audit().ok


def test_a_csv_import_runs_as_an_async_action_reporting_each_failed_row(
    api: sdk.ApiClient,
) -> None:
    vouchers, actions = sdk.VouchersApi(api), sdk.AsyncActionsApi(api)
    upload = (
        b"Code,Voucher Type,Value,Discount Type,Redemption Limit,Category\n"
        b"IMP-1,DISCOUNT_VOUCHER,500,AMOUNT,3,spring\n"
        b"IMP-2,GIFT_VOUCHER,2000,,,\n"
        b"IMP-3,SPACESHIP,1,AMOUNT,,\n"
    )
    accepted = vouchers.import_vouchers_using_csv(file=upload)
    action_id = accepted.async_action_id
    assert action_id.startswith("aa_")
    done = wait_for(
        lambda: (
            (found := actions.get_async_action(action_id)).status in ("DONE", "FAILED") and found
        ),
        "the import is done",
    )
    assert (done.status, done.type, done.progress, done.object) == (
        "DONE",
        "VOUCHERS.IMPORT_CSV",
        100,
        "async_action",
    )
    result = done.result
    assert (result["done_count"], result["failed_count"]) == (2, 1)
    (failure,) = result["failed"]
    assert (failure["code"], failure["row"]) == ("IMP-3", 3)
    assert "SPACESHIP" in failure["reason"]
    imported = vouchers.get_voucher("IMP-1")
    assert (imported.discount.amount_off, imported.redemption.quantity, imported.category) == (
        500,
        3,
        "spring",
    )
    assert vouchers.get_voucher("IMP-2").gift.balance == 2_000


def test_a_disabled_voucher_is_refused_until_enabled_and_a_deleted_one_is_gone(
    api: sdk.ApiClient,
) -> None:
    vouchers, validations = sdk.VouchersApi(api), sdk.ValidationsApi(api)
    _create(
        vouchers, "OFF-5", type="DISCOUNT_VOUCHER", discount={"type": "AMOUNT", "amount_off": 500}
    )
    stack = [{"object": "voucher", "id": "OFF-5"}]

    assert vouchers.disable_voucher("OFF-5").active is False
    refused = _validate(validations, redeemables=stack, order={"amount": 2_000})
    assert refused.redeemables[0].result.error.key == "voucher_disabled"
    assert vouchers.enable_voucher("OFF-5").active is True
    assert _validate(validations, redeemables=stack, order={"amount": 2_000}).valid is True
    # the SDK's update always sends type DISCOUNT_VOUCHER; only active can change
    assert (
        vouchers.update_voucher("OFF-5", models.VouchersUpdateRequestBody(active=False)).active
        is False
    )
    with pytest.raises(sdk.ApiException) as unsupported:
        vouchers.update_voucher("OFF-5", models.VouchersUpdateRequestBody(category="new"))
    assert "'category' cannot be changed" in _refusal(unsupported.value)["message"]

    vouchers.delete_voucher("OFF-5")
    with pytest.raises(sdk.ApiException) as missing:
        vouchers.get_voucher("OFF-5")
    assert (missing.value.status, _refusal(missing.value)["key"]) == (404, "not_found")
    with pytest.raises(sdk.ApiException) as taken:  # a soft delete keeps the code reserved
        _create(
            vouchers, "OFF-5", type="DISCOUNT_VOUCHER", discount={"type": "AMOUNT", "amount_off": 1}
        )
    assert _refusal(taken.value)["key"] == "duplicate_found"
    vouchers.delete_voucher("OFF-5", force=True)
    again = _create(
        vouchers, "OFF-5", type="DISCOUNT_VOUCHER", discount={"type": "AMOUNT", "amount_off": 700}
    )
    assert again.discount.amount_off == 700


def test_a_discount_and_a_gift_card_are_validated_and_redeemed_together_and_rolled_back_whole(
    api: sdk.ApiClient, served_engine: Engine
) -> None:
    vouchers, validations, redemptions = (
        sdk.VouchersApi(api),
        sdk.ValidationsApi(api),
        sdk.RedemptionsApi(api),
    )
    _create(
        vouchers,
        "TEN-OFF",
        type="DISCOUNT_VOUCHER",
        discount={"type": "AMOUNT", "amount_off": 1_000},
    )
    _create(vouchers, "CARD-1", type="GIFT_VOUCHER", gift={"amount": 3_000})
    stack = [{"object": "voucher", "id": "TEN-OFF"}, {"object": "voucher", "id": "CARD-1"}]
    order = {"id": "order-7", "amount": 2_500, "metadata": {"store": "north"}}

    checked = _validate(
        validations,
        redeemables=stack,
        order=order,
        customer={"source_id": "cust-1", "name": "Ann"},
        session={"type": "LOCK", "key": "pos-7"},
    )
    assert checked.valid is True
    assert [r.status for r in checked.redeemables] == ["APPLICABLE", "APPLICABLE"]
    assert checked.redeemables[1].result.gift.credits == 1_500
    assert (checked.order.discount_amount, checked.order.total_amount) == (1_000, 0)

    redeemed = _redeem(
        redemptions,
        redeemables=stack,
        order=order,
        customer={"source_id": "cust-1"},
        session={"key": "pos-7"},
        metadata={"till": 3},
    )
    parent = redeemed.parent_redemption
    assert [child.voucher.code for child in redeemed.redemptions] == ["TEN-OFF", "CARD-1"]
    assert [child.amount for child in redeemed.redemptions] == [1_000, 1_500]
    assert (parent.amount, parent.order.id, parent.customer.source_id) == (
        2_500,
        "order-7",
        "cust-1",
    )
    assert parent.metadata == {"till": 3}
    assert vouchers.get_voucher("CARD-1").gift.balance == 1_500

    rolled = redemptions.rollback_stacked_redemptions(parent.id, reason="cancelled")
    assert rolled.parent_rollback.redemption == parent.id
    assert sorted(r.redemption for r in rolled.rollbacks) == sorted(
        child.id for child in redeemed.redemptions
    )
    assert vouchers.get_voucher("CARD-1").gift.balance == 3_000
    assert redemptions.get_redemption(parent.id).status == "ROLLED_BACK"
    assert served_engine.audit().ok


def test_a_voucher_created_without_a_code_gets_one_of_its_code_config(api: sdk.ApiClient) -> None:
    vouchers = sdk.VouchersApi(api)
    made = vouchers.generate_random_code(
        models.VouchersCreateRequestBody.from_dict(
            {
                "type": "DISCOUNT_VOUCHER",
                "discount": {"type": "AMOUNT", "amount_off": 300},
                "code_config": {"pattern": "SPRING-####", "charset": "ABCDEF"},
            }
        )
    )
    assert made.code.startswith("SPRING-") and len(made.code) == len("SPRING-####")
    assert set(made.code.removeprefix("SPRING-")) <= set("ABCDEF")
    assert vouchers.get_voucher(made.code).discount.amount_off == 300
