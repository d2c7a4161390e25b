# The seed's default export policy, in current Rego syntax (the seed used the pre-1.0
# `allow { … }` form). An export is allowed only under an allowed preset (by default only
# tokenize_strict) and only when no high-risk value leaves untokenized. `decision` is what the
# gateway evaluates: allow plus a reason it can show the client when it refuses.
#
# The gateway asks twice: before calling the upstream (phase "request": nothing seen yet) and
# during the stream each time a high-risk type the preset would leave readable shows up for the
# first time (phase "stream", before that record leaves). On a path whose format is "auto" the
# request phase sees format "auto", and is asked again with the real format once the response's
# media type gives it (a deny then is a 403 before the head). Input:
#   preset, tenant, route, format ("json" | "ndjson" | "csv"; "auto" before the response), phase,
#   actions: {type: action}, detected: [type], high_risk_types: [type],
#   contains_high_risk_without_tokenization: bool, high_risk_without_tokenization: [type]
# Data: igw.dlp.allowed_presets (config dlp.policy.allowedPresets), default ["tokenize_strict"].
package intelgraph.dlp

default allowed_presets := ["tokenize_strict"]

allowed_presets := data.igw.dlp.allowed_presets

default allow := false

allow if {
	input.preset in allowed_presets
	not input.contains_high_risk_without_tokenization
}

default reason := "export denied by policy intelgraph.dlp"

reason := "allowed" if allow

# concat, not sprintf("%q"): the opa-wasm SDK's sprintf lacks %q.
reason := concat("", ["preset \"", input.preset, "\" is not allowed for exports (", allowed_text, ")"]) if {
	not allow
	is_string(input.preset)
	not input.preset in allowed_presets
}

allowed_text := concat("", ["only ", allowed_presets[0]]) if count(allowed_presets) == 1

allowed_text := concat("", ["allowed: ", concat(", ", sort(allowed_presets))]) if count(allowed_presets) > 1

# dlp.policy.allowedPresets: [] turns exports off; "(allowed: )" would read like a bug.
allowed_text := "no preset is allowed" if count(allowed_presets) == 0

reason := concat("", ["high-risk values would leave without tokenization", untokenized_text]) if {
	not allow
	input.preset in allowed_presets
	input.contains_high_risk_without_tokenization
}

default untokenized_text := ""

untokenized_text := concat("", [": ", concat(", ", input.high_risk_without_tokenization)]) if {
	is_array(input.high_risk_without_tokenization)
	count(input.high_risk_without_tokenization) > 0
}

decision := {"allow": allow, "reason": reason}
