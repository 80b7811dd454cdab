"use strict";
// The emulator's web inbox. It reads and drives the emulator only through its JSON API
// (/_emulator/...). /_emulator/events says *what* changed; the page then fetches it again.

const API = "/_emulator";
const $ = (id) => document.getElementById(id);

const state = {
  queue: "bot",        // the queue tab shown
  conversations: [],   // GET /conversations
  selected: null,      // the conversation both sides show
  conversation: null,  // GET /conversations/{id}
  calls: [],           // GET /calls (the selected conversation's, and token requests)
  webhooks: [],        // GET /webhooks?conversationId=
  clock: null,         // {monotonic, wall}: turns the API's monotonic "at" into wall time
  contact: null,       // {profile, attributes} of the contact picked in the form
};

// ------------------------------------------------------------------ helpers

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `${method} ${path}: ${response.status}`);
  return answer;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

function toast(error) {
  const box = $("toast");
  box.textContent = String(error.message || error);
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function wallTime(at) {
  if (!state.clock || typeof at !== "number") return "";
  const date = new Date((state.clock.wall + at - state.clock.monotonic) * 1000);
  return date.toTimeString().slice(0, 8) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function short(value, max = 180) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined || text === null) return "";
  return text.length > max ? text.slice(0, max) + "…" : text;
}

const isImage = (type) => typeof type === "string" && type.startsWith("image/");
const attachmentUrl = (cid, name) =>
  `${API}/conversations/${encodeURIComponent(cid)}/attachments/${encodeURIComponent(name)}`;
const contactName = (conversation) =>
  (conversation.contactProfile && conversation.contactProfile.primaryIdentifier) || "Contact";
const conversationOf = (path) => (path.match(/\/conversations\/([^/]+)/) || [])[1] || null;

const PLATFORM_NAMES = { sparkcentral: "Sparkcentral (classic)", hootsuite: "Hootsuite Inbox 2.0" };
// Why a conversation left the bot (the API's handoverReason).
const HANDOVER_REASONS = {
  bot: "by the bot",
  webhook_failed: "webhook failed",
  reply_timeout: "no bot reply in time",
  no_question: "no first question",
};

// ------------------------------------------------------------------ loading

// The platform the emulator plays and its published rules (GET /config), in the top bar.
async function loadPlatform() {
  const config = await api("GET", "/config");
  const box = $("platform");
  box.textContent = [PLATFORM_NAMES[config.platform] || config.platform,
    config.platform === "hootsuite" ? `organization ${config.organizationId}`
      : config.successorFields ? "successor fields on" : "classic fields only"].join(" · ");
  box.title = `A failed webhook is sent again ${config.webhookRetries} times (answer within ` +
    `${config.webhookTimeout}s, backoff up to ${config.webhookRetryBackoffMax}s), then handed over. ` +
    `A contact message the bot leaves unanswered for ${config.replyTimeout}s is handed over, ` +
    `so is a delegated conversation without a first question within ${config.delegatedQuestionTimeout}s.`;
}

async function loadList() {
  state.conversations = (await api("GET", "/conversations")).conversations;
}

async function loadSelected() {
  const cid = state.selected;
  if (!cid) return;
  const [conversation, calls, webhooks] = await Promise.all([
    api("GET", `/conversations/${encodeURIComponent(cid)}`),
    api("GET", "/calls?limit=1000"),
    api("GET", `/webhooks?conversationId=${encodeURIComponent(cid)}`),
  ]);
  if (cid !== state.selected) return;
  const started = conversation.transcript.length ? conversation.transcript[0].at : 0;
  state.conversation = conversation;
  state.calls = calls.calls.filter((call) =>
    conversationOf(call.path) === cid || (call.path.includes("oauth2/token") && call.at >= started));
  state.webhooks = webhooks.webhooks;
  const queue = conversation.queue;
  if (state.followQueue !== queue) {  // the selected conversation moved: follow it
    state.followQueue = queue;
    state.queue = queue;
  }
}

let timer = null;
let busy = false;
let again = false;
let selectedDirty = false;

function refresh(selectedToo) {
  if (selectedToo) selectedDirty = true;
  if (!timer) timer = setTimeout(run, 40);
}

async function run() {
  timer = null;
  if (busy) { again = true; return; }
  busy = true;
  try {
    const withSelected = selectedDirty;
    selectedDirty = false;
    await loadList();
    if (withSelected) await loadSelected();
    render();
  } catch (error) {
    toast(error);
  } finally {
    busy = false;
    if (again) { again = false; refresh(false); }
  }
}

function select(cid) {
  state.selected = cid;
  state.conversation = null;
  state.followQueue = null;
  refresh(true);
}

function connect() {
  const live = $("live");
  const source = new EventSource(`${API}/events`);
  source.addEventListener("hello", (event) => {
    state.clock = JSON.parse(event.data);
    live.textContent = "live";
    live.classList.add("on");
    loadPlatform().catch(toast);
    refresh(true);
  });
  source.onmessage = (event) => {
    const change = JSON.parse(event.data);
    refresh(!change.conversationId || change.conversationId === state.selected);
  };
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.classList.remove("on");
  };
}

// ------------------------------------------------------------------ rendering

function render() {
  renderQueues();
  renderContactPicker();
  renderContactSide();
  renderAgentSide();
  renderDetails();
  renderLog();
}

function renderQueues() {
  for (const queue of ["bot", "new", "resolved"]) {
    const count = state.conversations.filter((c) => c.queue === queue).length;
    const badge = $(`count-${queue}`);
    badge.textContent = count;
    badge.classList.toggle("some", count > 0);
  }
  for (const tab of $("tabs").querySelectorAll("button")) {
    tab.classList.toggle("active", tab.dataset.queue === state.queue);
  }
  const items = state.conversations.filter((c) => c.queue === state.queue).reverse().map((c) =>
    el("li", { "data-cid": c.conversationId, class: c.conversationId === state.selected ? "selected" : "",
               onclick: () => select(c.conversationId) },
      el("div", null, el("span", { class: "name" }, c.primaryIdentifier || c.conversationId),
         c.vip ? el("span", { class: "badge vip" }, "VIP") : null,
         el("span", { class: "badge" }, c.medium)),
      el("div", { class: "last" }, c.last ? c.last.line : ""),
      el("div", null, (c.topics || []).map((t) => el("span", { class: "badge topic" }, t)))));
  $("conversation-list").replaceChildren(
    ...(items.length ? items : [el("li", { class: "empty" }, `No conversation in ${state.queue}`)]));
}

function renderContactPicker() {
  const pick = $("contact-pick");
  const seen = new Map();  // one entry per contact name, its latest conversation
  for (const c of state.conversations) seen.set(c.primaryIdentifier || c.conversationId, c.conversationId);
  const current = pick.value;
  pick.replaceChildren(el("option", { value: "" }, "New contact…"),
    ...[...seen].map(([name, cid]) => el("option", { value: cid }, name)));
  pick.value = [...seen.values()].includes(current) ? current : "";
}

// Bot text with a numbered list under it (how the channel sends buttons): text + choices.
function splitChoices(text) {
  const lines = (text || "").split("\n");
  const choices = [];
  while (lines.length && /^\d+\.\s+\S/.test(lines[lines.length - 1])) {
    const [, number, title] = lines.pop().match(/^(\d+)\.\s+(.*)$/);
    choices.unshift({ number, title });
  }
  return { text: lines.join("\n"), choices };
}

function attachmentView(cid, entry) {
  if (!entry.attachment) return null;
  const url = attachmentUrl(cid, entry.attachment);
  if (isImage(entry.contentType)) return el("img", { src: url, alt: entry.attachment });
  return el("a", { class: "file", href: url, target: "_blank" }, `📎 ${entry.attachment}`);
}

function renderContactSide() {
  const conversation = state.conversation;
  const device = $("contact-chat").parentElement;
  device.className = "device medium-" + (conversation ? conversation.medium : "none");
  if (!conversation) {
    $("device-head").textContent = "No conversation";
    $("contact-chat").replaceChildren(el("li", { class: "empty" }, "Start a conversation or pick one."));
    $("contact-text").disabled = true;
    return;
  }
  const channel = (conversation.channel && conversation.channel.name) || "Sparkcentral";
  $("device-head").replaceChildren(channel, " ", el("small", null, `· ${conversation.medium} · ${contactName(conversation)}`));
  $("contact-text").disabled = false;
  const cid = conversation.conversationId;
  const rows = [];
  for (const entry of conversation.transcript) {
    if (entry.sender === "contact") {
      rows.push(el("li", { class: "msg mine" }, entry.text || ""));
    } else if (entry.sender === "bot" || entry.sender === "agent") {
      const { text, choices } = splitChoices(entry.text);
      rows.push(el("li", { class: `msg theirs from-${entry.sender}` },
        el("span", { class: "who" }, entry.sender === "bot" ? channel : "Agent"),
        text,
        choices.length ? el("ol", { class: "choices" }, choices.map((choice) =>
          el("li", null, el("button", { type: "button", onclick: () => contactSays(choice.number) },
            el("b", null, `${choice.number}.`), " ", choice.title)))) : null,
        attachmentView(cid, entry)));
    } else if (entry.text && entry.text.startsWith("[RESOLVED")) {
      rows.push(el("li", { class: "system" }, "Conversation closed"));
    }
  }
  if (conversation.typing === "START") rows.push(el("li", { class: "typing" }, "typing…"));
  fill($("contact-chat"), rows);
}

// A system line of the transcript, as the agent sees it.
function systemView(entry) {
  const text = entry.text || "";
  const when = wallTime(entry.at);
  const handover = text.match(/^\[(.*) -> new queue\]$/);
  if (handover) {  // by the bot ("[HANDOVER -> new queue]"), or by one of the emulator's rules
    const why = handover[1] === "HANDOVER" ? "by the bot" : handover[1];
    return el("li", { class: "divider handoff", title: when }, `Handed over to a human agent · New queue · ${why}`);
  }
  if (text.startsWith("[RESOLVED")) {
    return el("li", { class: "divider resolved", title: when }, text.includes("by the agent") ? "Resolved by the agent" : "Resolved by the bot");
  }
  const assigned = text.match(/^\[(CONVERSATION_\w+) -> bot queue\]$/);
  if (assigned) return el("li", { class: "divider assigned", title: when }, `Assigned to the bot · ${assigned[1]}`);
  return el("li", { class: "system", title: when }, text.replace(/^\[|\]$/g, ""));
}

function renderAgentSide() {
  const conversation = state.conversation;
  const queue = conversation ? conversation.queue : null;
  $("agent-text").disabled = queue !== "new";
  $("agent-compose").querySelector("button").disabled = queue !== "new";
  $("handback").disabled = queue === null || queue === "bot";
  $("resolve").disabled = queue === null || queue === "resolved";
  if (!conversation) {
    $("conversation-head").textContent = "Pick a conversation";
    $("agent-chat").replaceChildren();
    return;
  }
  const name = contactName(conversation);
  const vip = Boolean(conversation.contactProfile && conversation.contactProfile.vip);
  const reason = conversation.handoverReason;
  $("conversation-head").replaceChildren(el("span", null, name,
    vip ? el("span", { class: "badge vip" }, "VIP") : null,
    el("span", { class: "badge" }, `queue: ${queue}`),
    reason ? el("span", { class: "badge reason" }, `handed over: ${HANDOVER_REASONS[reason] || reason}`) : null, " ",
    el("small", null, conversation.conversationId)));
  const cid = conversation.conversationId;
  const rows = conversation.transcript.map((entry) => {
    if (entry.sender === "system") return systemView(entry);
    const who = { contact: name, bot: "Virtual agent", agent: "You (agent)" }[entry.sender] || entry.sender;
    const meta = [wallTime(entry.at), entry.via ? `via ${entry.via}` : ""].filter(Boolean).join(" · ");
    return el("li", { class: `msg from-${entry.sender}` },
      el("span", { class: "who" }, who), entry.text || "", attachmentView(cid, entry),
      el("span", { class: "meta" }, meta));
  });
  if (conversation.typing === "START") rows.push(el("li", { class: "typing" }, "Virtual agent is typing…"));
  fill($("agent-chat"), rows);
}

// Replace a chat's rows; stay at the bottom when the reader was there.
function fill(list, rows) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...rows);
  if (atBottom || list.dataset.cid !== state.selected) list.scrollTop = list.scrollHeight;
  list.dataset.cid = state.selected || "";
}

// Whatever the conversation carries under these names is shown (tags and notes appear
// once the emulator records them).
function listOf(conversation, ...names) {
  for (const name of names) if (Array.isArray(conversation[name])) return conversation[name];
  return [];
}

function renderDetails() {
  const conversation = state.conversation;
  const box = $("details");
  if (!conversation) { box.replaceChildren(el("p", { class: "none" }, "No conversation selected.")); return; }
  const none = (what) => el("p", { class: "none" }, what);
  const section = (title, id, ...body) => el("section", { id }, el("h2", null, title), ...body);
  const topics = conversation.topics || [];
  const tags = listOf(conversation, "tags", "appliedTags");
  const notes = listOf(conversation, "notes", "conversationNotes");
  const attributes = conversation.contactAttributes || [];
  const profile = conversation.contactProfile || {};
  box.replaceChildren(
    section("Topics", "topics", topics.length ? el("div", null, topics.map((t) => el("span", { class: "badge topic" }, t))) : none("none"),
      (conversation.ignoredTopics || []).length ? el("p", { class: "none" }, `ignored: ${conversation.ignoredTopics.join(", ")}`) : null),
    section("Notes", "notes", notes.length ? notes.map((n) => el("div", { class: "note" }, typeof n === "string" ? n : n.text || short(n))) : none("none")),
    section("Tags", "tags", tags.length ? el("div", null, tags.map((t) => el("span", { class: "badge" }, typeof t === "string" ? t : t.tag || short(t)))) : none("none")),
    section("Contact attributes", "attributes", attributes.length ? el("ul", { class: "attributes" }, attributes.map((a) =>
      el("li", null, el("span", { class: "key" }, a.attribute), el("span", { class: "value" }, String(a.value)),
        a.source ? el("span", { class: "badge" }, a.source) : null))) : none("none")),
    section("Contact", "profile", el("dl", null,
      el("dt", null, "name"), el("dd", null, profile.primaryIdentifier || ""),
      el("dt", null, "VIP"), el("dd", null, profile.vip ? "yes" : "no"),
      el("dt", null, "medium"), el("dd", null, conversation.medium),
      el("dt", null, "channel"), el("dd", null, (conversation.channel && conversation.channel.name) || ""),
      el("dt", null, "assigned"), el("dd", null, `${conversation.assignments}×`))));
}

function renderLog() {
  const rows = [];
  const sends = new Map();  // idempotencyKey -> deliveries seen so far (the same bytes again: a retry)
  for (const hook of state.webhooks) {
    const sent = hook.at - (hook.elapsed || 0);
    const retry = hook.idempotencyKey ? sends.get(hook.idempotencyKey) || 0 : 0;
    if (hook.idempotencyKey) sends.set(hook.idempotencyKey, retry + 1);
    const tries = (hook.attempts || []).length > 1  // a timed-out try has no row of its own
      ? `tries: ${hook.attempts.map((a) => a.status || "timeout").join(", ")}` : "";
    const detail = [hook.delivered ? `answered in ${Math.round((hook.elapsed || 0) * 1000)} ms` : "not sent (a human has it)",
      hook.applied ? "answer applied" : "", hook.error ? `error: ${hook.error}` : "",
      hook.body !== "" && hook.body !== null && JSON.stringify(hook.body) !== "{}" ? `answer ${short(hook.body)}` : "",
      tries, hook.idempotencyKey ? `key ${hook.idempotencyKey.slice(0, 8)}` : ""].filter(Boolean).join(" · ");
    rows.push({ at: sent, cls: `webhook${retry ? " retry" : ""}${hook.delivered && hook.status !== 200 ? " bad" : ""}`,
      what: `→ ${hook.eventType}${retry ? ` · retry ${retry}` : ""}`, status: hook.delivered ? hook.status : "—", detail });
  }
  for (const call of state.calls) {
    const target = call.path.includes("/attachments/") ? `attachment ${call.path.split("/").pop()}`
      : call.path.includes("oauth2/token") ? "token" : "conversation";
    const detail = call.path.includes("/attachments/")
      ? `${call.bodySize} bytes ${call.headers["Content-Type"] || call.headers["content-type"] || ""}`
      : call.json ? short(call.json) : "";
    const answer = call.status >= 400 && call.responseJson ? ` → ${short(call.responseJson, 120)}` : "";
    rows.push({ at: call.at, cls: `rest${call.fault ? " fault" : ""}${call.status >= 400 ? " bad" : ""}`,
      what: `← ${call.method} ${target}`, status: call.fault ? `${call.status} ${call.fault}` : call.status,
      detail: detail + answer });
  }
  rows.sort((a, b) => a.at - b.at);
  let previous = null;
  $("log-rows").replaceChildren(...rows.map((row) => {
    const gap = previous === null ? "" : `+${Math.round((row.at - previous) * 1000)}`;
    previous = row.at;
    return el("tr", { class: row.cls }, el("td", null, wallTime(row.at)), el("td", null, gap),
      el("td", { class: "what" }, row.what), el("td", { class: "status" }, String(row.status)),
      el("td", { class: "detail" }, row.detail));
  }));
  const hooks = state.webhooks.length;
  const calls = state.calls.length;
  $("log-summary").textContent = state.selected ? `${hooks} webhook${hooks === 1 ? "" : "s"}, ${calls} REST call${calls === 1 ? "" : "s"}` : "";
  const scroll = $("log-rows").closest(".log-scroll");
  scroll.scrollTop = scroll.scrollHeight;
}

// ------------------------------------------------------------------ actions

function languageAttribute(medium, language) {
  const name = medium === "smooch-rtm" ? "smooch-rtm-browser-language" : `${medium}-language`;
  return { attribute: name, value: language, source: "MEDIUM" };
}

function contactFromForm() {
  const name = $("contact-name").value.trim() || "Contact";
  const vip = $("contact-vip").checked;
  const medium = $("contact-medium").value;
  const language = $("contact-language").value.trim();
  const attributes = language ? [languageAttribute(medium, language)] : [];
  for (const line of $("contact-attributes").value.split("\n")) {
    const [key, ...rest] = line.split("=");
    if (key.trim() && rest.length) attributes.push({ attribute: key.trim(), value: rest.join("=").trim(), source: "CRM_CONFIRMED" });
  }
  const body = { medium, name, vip, contactAttributes: attributes };
  if (state.contact) body.contactProfile = { ...state.contact.profile, primaryIdentifier: name, vip };
  return body;
}

async function startConversation(body) {
  const answer = await api("POST", "/conversations", body || contactFromForm());
  const webhook = answer.webhook;
  if (webhook && webhook.status !== 200) toast(new Error(`the bot answered ${webhook.status}`));
  select(answer.conversationId);
  return answer.conversationId;
}

async function pickContact(cid) {
  state.contact = null;
  if (!cid) return;
  const conversation = await api("GET", `/conversations/${encodeURIComponent(cid)}`);
  const profile = conversation.contactProfile || {};
  state.contact = { profile };
  $("contact-name").value = profile.primaryIdentifier || "";
  $("contact-vip").checked = Boolean(profile.vip);
  $("contact-medium").value = conversation.medium;
  const attributes = conversation.contactAttributes || [];
  const language = attributes.find((a) => /-language$/.test(a.attribute));
  $("contact-language").value = language ? language.value : "";
  $("contact-attributes").value = attributes.filter((a) => a !== language && a.source !== "VIRTUAL_AGENT")
    .map((a) => `${a.attribute}=${a.value}`).join("\n");
  select(cid);
}

async function contactSays(text) {
  let cid = state.selected;
  if (!cid) return;
  const current = await api("GET", `/conversations/${encodeURIComponent(cid)}`);
  if (current.queue === "resolved") {
    // as in a real inbox: the contact writing again opens a new conversation
    cid = await startConversation({ contactProfile: current.contactProfile, medium: current.medium,
      contactAttributes: current.contactAttributes, channel: current.channel });
  }
  await api("POST", `/conversations/${encodeURIComponent(cid)}/messages`, { text });
}

function guard(action) {
  return (event) => {
    if (event) event.preventDefault();
    Promise.resolve().then(action).catch(toast);
  };
}

function bind() {
  $("contact-form").addEventListener("submit", guard(() => startConversation()));
  $("contact-pick").addEventListener("change", guard(() => pickContact($("contact-pick").value)));
  $("contact-compose").addEventListener("submit", guard(async () => {
    const input = $("contact-text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    await contactSays(text);
  }));
  $("agent-compose").addEventListener("submit", guard(async () => {
    const input = $("agent-text");
    const text = input.value.trim();
    if (!text || !state.selected) return;
    input.value = "";
    await api("POST", `/conversations/${encodeURIComponent(state.selected)}/agent`, { text });
  }));
  $("handback").addEventListener("click", guard(() =>
    api("POST", `/conversations/${encodeURIComponent(state.selected)}/handback`, { eventType: $("handback-type").value })));
  $("resolve").addEventListener("click", guard(() =>
    api("POST", `/conversations/${encodeURIComponent(state.selected)}/resolve`)));
  for (const tab of $("tabs").querySelectorAll("button")) {
    tab.addEventListener("click", () => { state.queue = tab.dataset.queue; render(); });
  }
}

bind();
render();
connect();
