package intelgraph.dlp_test

import data.intelgraph.dlp

test_tokenize_strict_clean_is_allowed if {
	dlp.decision == {"allow": true, "reason": "allowed"} with input as {"preset": "tokenize_strict", "contains_high_risk_without_tokenization": false}
}

test_tokenize_strict_without_flag_is_allowed if {
	dlp.allow with input as {"preset": "tokenize_strict"}
}

test_high_risk_untokenized_is_denied if {
	not dlp.allow with input as {"preset": "tokenize_strict", "contains_high_risk_without_tokenization": true}
	dlp.reason == "high-risk values would leave without tokenization" with input as {"preset": "tokenize_strict", "contains_high_risk_without_tokenization": true}
}

test_other_presets_are_denied if {
	not dlp.allow with input as {"preset": "mask_basic"}
	dlp.decision.reason == "preset \"mask_basic\" is not allowed for exports (only tokenize_strict)" with input as {"preset": "mask_basic"}
}

test_missing_input_is_denied if {
	not dlp.allow
}
