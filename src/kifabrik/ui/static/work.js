// KI-Hub work pages: live job progress (server-sent events) and the streaming chat. No framework;
// loaded with `defer` from this server only (CSP: script-src 'self'). Every page works without it.
"use strict";

document.documentElement.classList.add("js");

// ------------------------------------------------------------------ job page
function drawLoss(svg, points) {
  const line = document.getElementById("loss-line");
  const empty = document.getElementById("loss-empty");
  if (!svg || !line) return;
  if (!points.length) { line.setAttribute("points", ""); return; }
  const vb = svg.viewBox.baseVal;
  const left = +svg.dataset.left, right = +svg.dataset.right, top = +svg.dataset.top, bottom = +svg.dataset.bottom;
  const w = vb.width - left - right, h = vb.height - top - bottom;
  const steps = points.map((p) => p[0]), losses = points.map((p) => p[1]);
  const x0 = Math.min(...steps), y0 = Math.min(...losses);
  let x1 = Math.max(...steps), y1 = Math.max(...losses);
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1e-9;
  line.setAttribute("points", points.map(([s, v]) =>
    `${(left + (s - x0) / (x1 - x0) * w).toFixed(1)},${(top + (1 - (v - y0) / (y1 - y0)) * h).toFixed(1)}`).join(" "));
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  set("loss-x0", String(x0)); set("loss-x1", String(Math.max(...steps)));
  set("loss-y0", Math.min(...losses).toFixed(3)); set("loss-y1", Math.max(...losses).toFixed(3));
  if (empty) empty.hidden = true;
}

function showJob(state) {
  const status = document.getElementById("job-status");
  if (status && status.dataset.status !== state.status) {
    status.dataset.status = state.status;
    status.className = "badge status-" + state.status;
    status.textContent = state.status;  // the page reloads at the end, with the translated word
  }
  const bar = document.getElementById("job-progress");
  const label = document.getElementById("job-step");
  if (bar && state.max_steps) { bar.max = state.max_steps; bar.value = state.step || 0; }
  if (label && state.step != null) {
    label.textContent = state.max_steps
      ? label.dataset.of.replace("STEP", state.step).replace("MAX", state.max_steps)
      : label.dataset.only.replace("STEP", state.step);
  }
  drawLoss(document.getElementById("loss-svg"), state.loss || []);
  const log = document.getElementById("job-log");
  if (log && state.log_tail) {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = state.log_tail.join("\n");
    if (atEnd) log.scrollTop = log.scrollHeight;
  }
}

function followJob() {
  const box = document.getElementById("job");
  if (!box || !box.dataset.events || !window.EventSource) return;
  const source = new EventSource(box.dataset.events);
  source.addEventListener("progress", (ev) => showJob(JSON.parse(ev.data)));
  source.addEventListener("end", () => {
    source.close();  // else EventSource reconnects and the job page would poll forever
    window.location.reload();  // the finished job's results and actions, rendered by the server
  });
}

// ------------------------------------------------------------------ chat
async function streamChat(form) {
  const answer = document.getElementById("chat-answer");
  const status = document.getElementById("chat-status");
  const sources = document.getElementById("chat-sources");
  const disclosure = document.getElementById("chat-disclosure");
  const button = form.querySelector("button[type=submit]");
  const question = document.getElementById("chat-question");
  answer.textContent = "";
  sources.replaceChildren();
  sources.hidden = true;
  disclosure.hidden = true;
  if (question) question.textContent = form.elements.message.value;
  status.textContent = form.dataset.loading;
  button.disabled = true;
  try {
    const response = await fetch(form.dataset.stream, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-CSRF-Token": form.elements.csrf.value, "Accept": "text/event-stream" },
    });
    if (!response.ok || !response.body) {
      let message = response.statusText;
      try { const body = await response.json(); message = body.error.message || message; } catch (e) { /* not JSON */ }
      status.textContent = message;
      status.classList.add("error");
      return;
    }
    status.classList.remove("error");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) { status.textContent = chunk.error.message; status.classList.add("error"); continue; }
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) { answer.textContent += delta.content; status.textContent = form.dataset.answering; }
          if (chunk.sources) showSources(sources, chunk.sources, form.dataset.sourcesLabel);
          if (chunk.choices && chunk.choices[0] && chunk.choices[0].finish_reason) {
            status.textContent = "";
            disclosure.hidden = false;  // the AI disclosure goes with every answer
            form.elements.message.value = "";
          }
        }
      }
    }
  } catch (e) {
    status.textContent = String(e);
    status.classList.add("error");
  } finally {
    button.disabled = false;
  }
}

function showSources(list, items, label) {
  list.replaceChildren();
  for (const src of items) {
    const li = document.createElement("li");
    const head = document.createElement("strong");
    head.textContent = `[${src.n}] ${src.source || src.dataset || ""}`;
    const quote = document.createElement("blockquote");
    quote.textContent = src.text || "";
    li.append(head, quote);
    list.append(li);
  }
  list.hidden = !items.length;
  list.setAttribute("aria-label", label);
}

document.addEventListener("DOMContentLoaded", () => {
  followJob();
  const chat = document.getElementById("chat-form");
  if (chat && window.fetch && window.ReadableStream) {
    chat.addEventListener("submit", (ev) => { ev.preventDefault(); streamChat(chat); });
  }
});
