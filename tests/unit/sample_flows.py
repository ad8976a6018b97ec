"""A small pipeline for the CLI tests, loaded by path as the CLI's users do."""

from __future__ import annotations

from pydantic import BaseModel, SecretStr

import flowkit


class Order(BaseModel):
    tenant_id: str
    amount: int


class Total(BaseModel):
    tenant_id: str
    total: int


@flowkit.stage(queue="cli.price")
def price(order: Order) -> Total:
    return Total(tenant_id=order.tenant_id, total=order.amount * 2)


@flowkit.stage(queue="cli.fail", retries=0)
def explode(total: Total) -> Total:
    if total.tenant_id == "boom":
        raise RuntimeError("exploded on purpose")
    return total


pipeline = flowkit.Pipeline("cli-orders", [price, explode])
other = flowkit.Pipeline("cli-other", [flowkit.stage(name="echo")(price.fn)])

fan = flowkit.Workflow("cli-fan", on="fan:go")


@fan.step
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True)
def square(x: int) -> int:
    return x * x


@fan.step(after=square)
def total(squares: list[int]) -> int:
    return sum(squares)


app = flowkit.App("cli", flows=[pipeline, other, fan])
not_a_flow = 42

# A workflow with a signal wait and a schedule, and one whose early Stop leaves a
# step unreached; their own App, so `app` above keeps its three flows.
approval = flowkit.Workflow("cli-approval", schedule="0 9 * * 1")


@approval.step
def draft(n: int) -> int:
    return n


@approval.step(after=draft, wait_for="approval", timeout="24h")
def review(n: int, ok: bool) -> int:
    return n


gated = flowkit.Workflow("cli-gated")


@gated.step
def check(n: int) -> int | flowkit.Stop:
    return flowkit.Stop(reason="too small") if n < 0 else n


@gated.step(after=check)
def book(n: int) -> int:
    return n + 1


@gated.step(after=check)
def notify(n: int) -> str:
    return f"notified {n}"


class Login(BaseModel):
    user: str
    password: SecretStr


class Session(BaseModel):
    user: str
    token: SecretStr


@flowkit.stage(name="sign_in")
def sign_in(login: Login) -> Session:
    return Session(user=login.user, token=SecretStr("tok-" + login.user))


login = flowkit.Pipeline("cli-login", [sign_in])

other_app = flowkit.App("cli-more", flows=[approval, gated, login])
