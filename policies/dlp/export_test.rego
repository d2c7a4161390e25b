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

test_allowed_presets_come_from_data if {
	dlp.allow with input as {"preset": "mask_basic"} with data.igw.dlp.allowed_presets as ["mask_basic", "tokenize_strict"]
	not dlp.allow with input as {"preset": "redact_all"} with data.igw.dlp.allowed_presets as ["mask_basic", "tokenize_strict"]
	dlp.reason == "preset \"redact_all\" is not allowed for exports (allowed: mask_basic, tokenize_strict)" with input as {"preset": "redact_all"} with data.igw.dlp.allowed_presets as ["tokenize_strict", "mask_basic"]
}

test_data_replaces_the_default_list if {
	not dlp.allow with input as {"preset": "tokenize_strict"} with data.igw.dlp.allowed_presets as ["mask_basic"]
}

test_stream_phase_names_the_untokenized_types if {
	d := dlp.decision with input as {
		"preset": "tokenize_strict", "phase": "stream", "detected": ["email", "credit_card"],
		"contains_high_risk_without_tokenization": true, "high_risk_without_tokenization": ["credit_card"],
	}
	d == {"allow": false, "reason": "high-risk values would leave without tokenization: credit_card"}
}

test_high_risk_under_an_allowed_mask_preset_is_denied if {
	not dlp.allow with input as {"preset": "mask_basic", "contains_high_risk_without_tokenization": true} with data.igw.dlp.allowed_presets as ["mask_basic"]
}

test_no_allowed_preset_says_so if {
	d := dlp.decision with input as {"preset": "tokenize_strict"} with data.igw.dlp.allowed_presets as []
	d == {"allow": false, "reason": "preset \"tokenize_strict\" is not allowed for exports (no preset is allowed)"}
}
