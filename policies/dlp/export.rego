# The seed's default export policy, in current Rego syntax (the seed used the pre-1.0
# `allow { … }` form). An export is allowed only under the tokenize_strict preset and only when
# no high-risk value leaves untokenized. `decision` is what the gateway evaluates: allow plus a
# reason it can show the client when it refuses.
package intelgraph.dlp

default allow := false

allow if {
	input.preset == "tokenize_strict"
	not input.contains_high_risk_without_tokenization
}

default reason := "export denied by policy intelgraph.dlp"

reason := "allowed" if allow

# concat, not sprintf("%q"): the opa-wasm SDK's sprintf lacks %q.
reason := concat("", ["preset \"", input.preset, "\" is not allowed for exports (only tokenize_strict)"]) if {
	not allow
	is_string(input.preset)
	input.preset != "tokenize_strict"
}

reason := "high-risk values would leave without tokenization" if {
	not allow
	input.preset == "tokenize_strict"
	input.contains_high_risk_without_tokenization
}

decision := {"allow": allow, "reason": reason}
