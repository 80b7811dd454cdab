"""``rasa-sparkcentral doctor``: check a project and its running servers, one line each.

Every check prints ``ok`` or ``FAIL`` with the fix in one line; checks that depend on a
failed one say ``skip``. The exit code is 0 only when nothing failed. Nothing secret is
printed: not the API keys, not the shared secret, not a token.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

from rasa_sparkcentral import project_snippets as snip
from rasa_sparkcentral.config import ConfigError, Settings
from rasa_sparkcentral.project_files import (
    Project,
    ProjectError,
    UnsetVariableError,
    data_facts,
    domain_facts,
    find_project,
    read_yaml,
)
from rasa_sparkcentral.protocol import CREDENTIALS_KEY, HEALTH_PATH, SIGNATURE_HEADER, WEBHOOK_PATH
from rasa_sparkcentral.rasa_edition import (
    RasaEdition,
    installed_rasa,
    installed_version,
    slow_action_answers,
)
from rasa_sparkcentral.signature import sign

HTTP_TIMEOUT = 5.0
TOKEN_PATH = "/virtual-agent/oauth2/token"
#: A harmless event: a type the channel ignores (answers 200 and does nothing).
PROBE_EVENT_TYPE = "RASA_SPARKCENTRAL_DOCTOR_PROBE"
INIT_HINT = "run `rasa-sparkcentral init`"

# loopback and configured URLs alike: never through an http_proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Check:
    name: str
    ok: Optional[bool]  # None: skipped, or advice when ``note``
    text: str
    note: bool = False

    def line(self) -> str:
        label = "note" if self.note else {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"{label} {self.name}: {self.text}"


@dataclass
class Context:
    """What earlier checks learned, for the later ones."""

    project: Optional[Project] = None
    settings: Optional[Settings] = None
    start_intent: Optional[str] = snip.INTENT_GREET
    action_url: Optional[str] = None
    rasa_up: bool = False
    checks: List[Check] = field(default_factory=list)

    def add(self, name: str, ok: Optional[bool], text: str, *, note: bool = False) -> bool:
        check = Check(name, ok, text, note)
        self.checks.append(check)
        print(check.line(), flush=True)
        return bool(ok)


def _http(
    method: str,
    url: str,
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> Tuple[int, bytes]:
    """(status, body) of one request; raises OSError when nothing answers."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except urllib.error.URLError as e:
        reason = e.reason
        raise OSError(str(reason)) from None


# --------------------------------------------------------------------------- files


def check_project(ctx: Context, root: Path) -> None:
    try:
        ctx.project = find_project(root)
    except ProjectError as e:
        ctx.add("project", False, str(e))
        return
    ctx.add("project", True, str(ctx.project.root))


def check_credentials(ctx: Context) -> None:
    name = "credentials.yml"
    project = ctx.project
    assert project is not None
    path = project.credentials_path
    if not path.exists():
        ctx.add(name, False, f"{path} is missing: {INIT_HINT}")
        return
    try:
        data = read_yaml(path, expand_env=True)
    except UnsetVariableError as e:
        ctx.add(name, False, f"export {', '.join(e.names)} (credentials.yml reads them)")
        return
    except ProjectError as e:
        ctx.add(name, False, str(e))
        return
    if not isinstance(data, dict) or CREDENTIALS_KEY not in data:
        ctx.add(name, False, f"no {CREDENTIALS_KEY} entry: {INIT_HINT}")
        return
    creds = data[CREDENTIALS_KEY]
    try:
        ctx.settings = Settings.from_credentials(creds if isinstance(creds, dict) else {})
    except ConfigError as e:
        ctx.add(name, False, str(e))
        return
    if isinstance(creds, dict) and "conversation_started_intent" in creds:
        ctx.start_intent = ctx.settings.conversation_started_intent
    ctx.add(
        name,
        True,
        f"{CREDENTIALS_KEY} valid (reply_mode {ctx.settings.reply_mode}, "
        f"API base {ctx.settings.base_url})",
    )


def check_endpoints(ctx: Context) -> None:
    name = "endpoints.yml"
    assert ctx.project is not None
    path = ctx.project.endpoints_path
    fix = f"add action_endpoint with url {snip.DEFAULT_ACTION_URL} to endpoints.yml ({INIT_HINT})"
    if not path.exists():
        ctx.add(name, False, f"{path.name} is missing: {fix}")
        return
    try:
        data = read_yaml(path, expand_env=True)
    except ProjectError as e:
        ctx.add(name, False, str(e))
        return
    endpoint = data.get("action_endpoint") if isinstance(data, dict) else None
    url = endpoint.get("url") if isinstance(endpoint, dict) else None
    if not isinstance(url, str) or not url.strip():
        ctx.add(name, False, f"no action_endpoint, so our actions never run: {fix}")
        return
    ctx.action_url = url.strip()
    ctx.add(name, True, f"action_endpoint {ctx.action_url}")


def check_domain(ctx: Context) -> None:
    name = "domain"
    assert ctx.project is not None
    try:
        facts = domain_facts(ctx.project)
    except ProjectError as e:
        ctx.add(name, False, str(e))
        return
    intents = [snip.INTENT_HANDOFF, snip.INTENT_RESOLVE]
    if ctx.start_intent:
        intents.insert(0, ctx.start_intent)
    missing = [f"intent {i}" for i in intents if i not in facts.intents]
    missing += [f"action {a}" for a in snip.ACTIONS if a not in facts.actions]
    missing += [f"response {r}" for r in snip.RESPONSES if r not in facts.responses]
    left_out = [s for s in snip.slot_names() if s not in facts.slots]
    unmapped = [
        s
        for s, slot in facts.slots.items()
        if s in snip.DETAIL_SLOTS and not _mapped_to_details(slot)
    ]
    if missing:
        ctx.add(name, False, f"lacks {_few(missing)}: {INIT_HINT}")
    elif unmapped:
        ctx.add(
            name,
            False,
            f"slot(s) {_few(unmapped)} not filled by {snip.ACTION_DETAILS}: give each the "
            f"mapping `type: custom` + `action: {snip.ACTION_DETAILS}`",
        )
    else:
        ctx.add(name, True, "intents, actions and responses of rasa-sparkcentral declared")
        if left_out:
            # a bot may leave out the slots it does not read: the action fills declared ones
            ctx.add(
                "slots",
                None,
                f"{_few(left_out)} not declared, so not filled (fine if no rule, response "
                "or action reads them; each filled slot costs Rasa a little on every turn: "
                "README: What the slots cost)",
                note=True,
            )


def _mapped_to_details(slot: Any) -> bool:
    mappings = slot.get("mappings") if isinstance(slot, dict) else None
    for mapping in mappings or []:
        if isinstance(mapping, dict) and snip.ACTION_DETAILS in (
            mapping.get("action"),
            mapping.get("run_action_every_turn"),
        ):
            return True
    return False


def _few(items: List[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def check_data(ctx: Context) -> None:
    name = "training data"
    assert ctx.project is not None
    try:
        facts = data_facts(ctx.project)
    except ProjectError as e:
        ctx.add(name, False, str(e))
        return
    intents = [snip.INTENT_HANDOFF, snip.INTENT_RESOLVE]
    if ctx.start_intent:
        intents.insert(0, ctx.start_intent)
    missing = [f"examples of intent {i}" for i in intents if i not in facts.nlu_intents]
    missing += [
        f"a rule running {a}"
        for a in (snip.ACTION_HANDOFF, snip.ACTION_RESOLVE)
        if a not in facts.rule_actions
    ]
    if missing:
        ctx.add(name, False, f"lacks {_few(missing)}: {INIT_HINT}, then `rasa train`")
    else:
        ctx.add(name, True, "NLU examples and rules for handoff and resolve present")


def check_actions_registered(ctx: Context) -> None:
    """Import the actions package the way ``rasa run actions`` does, in a child process."""
    name = "actions package"
    assert ctx.project is not None
    project = ctx.project
    if not project.actions_files:
        ctx.add(name, False, f"{project.root}/actions is missing: {INIT_HINT}")
        return
    code = (
        "import json, sys\n"
        "from rasa_sdk.executor import ActionExecutor\n"
        "executor = ActionExecutor()\n"
        "executor.register_package('actions')\n"
        "print(json.dumps(sorted(executor.actions)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        ctx.add(name, False, f"importing actions fails ({last}): fix that error first")
        return
    try:
        registered = set(json.loads(result.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        ctx.add(name, False, "could not list the registered actions")
        return
    missing = [a for a in snip.ACTIONS if a not in registered]
    if missing:
        ctx.add(
            name,
            False,
            f"does not register {_few(missing)}: add `{snip.ACTIONS_IMPORT}` to actions/actions.py",
        )
    else:
        ctx.add(name, True, "registers Sparkcentral's actions")


def action_answers_advice(edition: Optional[RasaEdition], jsonschema: Optional[str]) -> str:
    """What each answer of the action server costs this Rasa, when that is worth a note
    ("" otherwise)."""
    if not slow_action_answers(edition, jsonschema):
        return ""
    return (
        f"{edition} with jsonschema {jsonschema} re-checks its schema with every answer of "
        "the action server (about 20 ms of CPU; the channel-details slots ask for one with "
        'every message): `pip install "jsonschema==3.2.0"` makes a busy Rasa about twice as '
        "fast (README: What the slots cost)"
    )


def check_action_answers(ctx: Context) -> None:
    """Advice, never a failure, for the installed Rasa and jsonschema."""
    advice = action_answers_advice(installed_rasa(), installed_version("jsonschema"))
    if advice:
        ctx.add("action answers", None, advice, note=True)


# --------------------------------------------------------------------------- servers


def check_action_server(ctx: Context) -> None:
    name = "action server"
    if ctx.action_url is None:
        ctx.add(name, None, "no action_endpoint to try")
        return
    base = ctx.action_url.rstrip("/")
    if base.endswith("/webhook"):
        base = base[: -len("/webhook")]
    try:
        status, body = _http("GET", f"{base}/actions")
    except OSError as e:
        ctx.add(name, False, f"{base} does not answer ({e}): start it with `rasa run actions`")
        return
    try:
        names = {a.get("name") for a in json.loads(body)} if status == 200 else set()
    except (ValueError, AttributeError, TypeError):
        names = set()
    if status != 200:
        ctx.add(
            name, False, f"GET {base}/actions answered {status}: is it a rasa_sdk action server?"
        )
        return
    missing = [a for a in snip.ACTIONS if a not in names]
    if missing:
        ctx.add(
            name,
            False,
            f"{base} does not register {_few(missing)}: restart `rasa run actions` "
            "after adding the import",
        )
    else:
        ctx.add(name, True, f"{base} registers Sparkcentral's actions")


def check_rasa(ctx: Context, rasa_url: str) -> None:
    name = "rasa run"
    url = rasa_url.rstrip("/") + HEALTH_PATH
    start = "start `rasa run --credentials credentials.yml` (or pass --rasa-url)"
    try:
        status, _ = _http("GET", url)
    except OSError as e:
        ctx.add(name, False, f"{rasa_url} does not answer ({e}): {start}")
        return
    if status == 404:
        ctx.add(name, False, f"{rasa_url} has no Sparkcentral channel: {start}")
        return
    if status != 200:
        ctx.add(name, False, f"GET {url} answered {status}: see rasa run's log")
        return
    ctx.rasa_up = True
    ctx.add(name, True, f"{rasa_url} has the Sparkcentral channel")


def check_signed_event(ctx: Context, rasa_url: str) -> None:
    name = "signed webhook"
    if ctx.settings is None or not ctx.rasa_up:
        ctx.add(name, None, "needs valid credentials and a running rasa run")
        return
    body = json.dumps({"type": PROBE_EVENT_TYPE, "data": {}}).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(ctx.settings.shared_secret, body),
    }
    url = rasa_url.rstrip("/") + WEBHOOK_PATH
    try:
        status, _ = _http("POST", url, body, headers)
    except OSError as e:
        ctx.add(name, False, f"{url} does not answer ({e})")
        return
    if status == 401:
        ctx.add(
            name,
            False,
            "rasa run rejected our signature: check shared_secret (credentials.yml and the "
            "environment rasa run was started with must hold the Custom Virtual Agent's)",
        )
    elif status != 200:
        ctx.add(name, False, f"a signed test event got {status} (expected 200): see rasa run's log")
    else:
        ctx.add(name, True, "rasa run accepts events signed with the shared secret")


def check_api_base(ctx: Context) -> None:
    name = "Sparkcentral API"
    if ctx.settings is None:
        ctx.add(name, None, "needs valid credentials")
        return
    base = ctx.settings.base_url
    try:
        _http("GET", base + "/")
    except OSError as e:
        ctx.add(
            name,
            False,
            f"{base} does not answer ({e}): check base_url and region "
            "(no base_url for real Sparkcentral)",
        )
        return
    ctx.add(name, True, f"{base} answers")


def check_api_keys(ctx: Context, online: bool) -> None:
    name = "API keys"
    settings = ctx.settings
    if not online:
        ctx.add(name, None, "not tried (add --online to request one token)")
        return
    if settings is None or not settings.has_api_keys:
        ctx.add(name, None, "no API keys configured")
        return
    assert settings.client_id is not None and settings.client_secret is not None
    auth = base64.b64encode(f"{settings.client_id}:{settings.client_secret}".encode()).decode()
    body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "client-read"})
    headers = {
        "Authorization": f"Basic {auth}",
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    try:
        status, _ = _http("POST", settings.base_url + TOKEN_PATH, body.encode(), headers)
    except OSError as e:
        ctx.add(name, False, f"the token endpoint does not answer ({e}): check base_url and region")
        return
    if status in (400, 401, 403):
        ctx.add(
            name,
            False,
            f"Sparkcentral refused the API keys ({status}): check client_id, client_secret "
            "and region",
        )
    elif status != 200:
        ctx.add(name, False, f"the token endpoint answered {status}: try again later")
    else:
        ctx.add(name, True, "Sparkcentral issued a token for the API keys")


def run_doctor(root: Path, *, rasa_url: str, online: bool) -> int:
    ctx = Context()
    check_project(ctx, root)
    if ctx.project is not None:
        steps: List[Callable[[], None]] = [
            lambda: check_credentials(ctx),
            lambda: check_endpoints(ctx),
            lambda: check_domain(ctx),
            lambda: check_data(ctx),
            lambda: check_actions_registered(ctx),
            lambda: check_action_answers(ctx),
            lambda: check_action_server(ctx),
        ]
        for step in steps:
            step()
    check_rasa(ctx, rasa_url)
    check_signed_event(ctx, rasa_url)
    check_api_base(ctx)
    check_api_keys(ctx, online)
    failed = sum(1 for c in ctx.checks if c.ok is False)
    print("All is well." if not failed else f"{failed} problem(s) found.", flush=True)
    return 0 if not failed else 1
