#!/usr/bin/env bash
# The alert rules and the Grafana dashboard in deploy/: `promtool check rules`, the rules' unit
# tests (`promtool test rules`: series that trip and that do not trip each alert), and every
# metric they name is one Tollgate exports (src/metrics.rs), so a renamed metric fails here.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi
promtool check rules deploy/prometheus/tollgate-rules.yaml
(cd deploy/prometheus && promtool test rules tollgate-rules.test.yaml)
python3 - <<'PY'
import json, re, sys, yaml
src = open("src/metrics.rs").read()
exported = {"tollgate_" + n for n in re.findall(
    r'(?:Opts|HistogramOpts|IntCounter|IntGauge|Gauge)::new\(\s*"([a-z0-9_]+)"', src)}
histograms = {"tollgate_" + n for n in re.findall(r'HistogramOpts::new\(\s*"([a-z0-9_]+)"', src)}
def names(text):
    out = set()
    for m in re.findall(r"tollgate_[a-z0-9_]+", text):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        out.add(base if base in histograms else m)
    return out
rules = yaml.safe_load(open("deploy/prometheus/tollgate-rules.yaml"))
exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
dash = json.load(open("deploy/grafana/tollgate-dashboard.json"))
targets = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
bad = sorted((names(exprs) | names(targets)) - exported)
if bad:
    sys.exit(f"metrics named in deploy/ that Tollgate does not export: {bad}")
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
tests = open("deploy/prometheus/tollgate-rules.test.yaml").read()
untested = [a for a in alerts if f"alertname: {a}" not in tests]
if untested:
    sys.exit(f"alerts without a promtool test: {untested}")
print(f"deploy/: {len(alerts)} alerts tested, {len(dash['panels'])} dashboard panels, every metric exported")
PY
