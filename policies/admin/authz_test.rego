package intelgraph.admin_test

import data.intelgraph.admin

viewer := {"sub": "v", "roles": ["viewer"]}

operator := {"sub": "o", "roles": ["operator"]}

test_viewer_reads if {
	admin.allow with input as {"subject": viewer, "action": "admin.read", "resource": {"type": "tenants"}}
}

test_viewer_cannot_write if {
	d := admin.decision with input as {"subject": viewer, "action": "admin.write", "resource": {"type": "tenants"}}
	d == {"allow": false, "reason": "subject lacks the \"admin.write\" attribute"}
}

test_operator_writes if {
	admin.allow with input as {"subject": operator, "action": "admin.write", "resource": {"type": "routes", "id": "r"}}
}

test_operator_cannot_detokenize if {
	not admin.allow with input as {"subject": operator, "action": "dlp.detokenize", "resource": {"type": "dlp"}, "context": {"justification": "case 1234 review"}}
}

test_direct_attribute_grants if {
	admin.allow with input as {"subject": {"sub": "x", "attributes": ["dlp.review"]}, "action": "dlp.review", "resource": {"type": "dlp"}}
}

test_unknown_attribute_in_token_grants_nothing if {
	d := admin.decision with input as {"subject": {"sub": "x", "attributes": ["root"]}, "action": "root", "resource": {"type": "x"}}
	d == {"allow": false, "reason": "unknown action \"root\""}
}

test_tenant_scoped_subject_own_tenant if {
	admin.allow with input as {"subject": {"sub": "t", "roles": ["operator"], "tenant": "acme"}, "action": "admin.write", "resource": {"type": "quotas", "tenant": "acme"}}
}

test_tenant_scoped_subject_other_tenant if {
	d := admin.decision with input as {"subject": {"sub": "t", "roles": ["operator"], "tenant": "acme"}, "action": "admin.write", "resource": {"type": "quotas", "tenant": "globex"}}
	d.allow == false
	d.reason == "subject is scoped to tenant \"acme\"; this resource is outside it"
}

test_tenant_scoped_subject_global_resource if {
	not admin.allow with input as {"subject": {"sub": "t", "roles": ["admin"], "tenant": "acme"}, "action": "admin.write", "resource": {"type": "routes"}}
}

test_detokenize_needs_justification if {
	officer := {"sub": "d", "roles": ["dlp-officer"]}
	d := admin.decision with input as {"subject": officer, "action": "dlp.detokenize", "resource": {"type": "dlp"}}
	d.allow == false
	d.reason == "detokenize needs a justification of at least 8 characters (x-justification header)"
	admin.allow with input as {"subject": officer, "action": "dlp.detokenize", "resource": {"type": "dlp"}, "context": {"justification": "ticket SEC-42"}}
}

test_proxy_role_only_syncs if {
	admin.allow with input as {"subject": {"sub": "p", "roles": ["proxy"]}, "action": "proxy.sync", "resource": {"type": "stream"}}
	not admin.allow with input as {"subject": {"sub": "p", "roles": ["proxy"]}, "action": "admin.read", "resource": {"type": "config"}}
}

test_no_subject_is_denied if {
	not admin.allow with input as {"action": "admin.read", "resource": {"type": "config"}}
}

test_admin_uploads_plugins if {
	admin.allow with input as {"subject": {"sub": "a", "roles": ["admin"]}, "action": "plugins.write", "resource": {"type": "plugins", "id": "geo@1.0.0"}}
}

test_plugin_publisher_only_uploads if {
	publisher := {"sub": "ci", "roles": ["plugin-publisher"]}
	admin.allow with input as {"subject": publisher, "action": "plugins.write", "resource": {"type": "plugins"}}
	not admin.allow with input as {"subject": publisher, "action": "admin.write", "resource": {"type": "routes"}}
	not admin.allow with input as {"subject": publisher, "action": "admin.read", "resource": {"type": "plugins"}}
}

test_operator_cannot_upload_plugins if {
	d := admin.decision with input as {"subject": operator, "action": "plugins.write", "resource": {"type": "plugins"}}
	d == {"allow": false, "reason": "subject lacks the \"plugins.write\" attribute"}
}

test_plugins_write_attribute_in_token if {
	admin.allow with input as {"subject": {"sub": "x", "attributes": ["plugins.write"]}, "action": "plugins.write", "resource": {"type": "plugins"}}
}

test_tenant_scoped_subject_cannot_upload_plugins if {
	d := admin.decision with input as {"subject": {"sub": "t", "roles": ["admin"], "tenant": "acme"}, "action": "plugins.write", "resource": {"type": "plugins"}}
	d.allow == false
	d.reason == "subject is scoped to tenant \"acme\"; this resource is outside it"
}

test_a_malformed_tenant_claim_still_scopes if {
	every tenant in [null, 5, false, ["acme"], {"id": "acme"}, ""] {
		d := admin.decision with input as {"subject": {"sub": "t", "roles": ["admin"], "tenant": tenant}, "action": "admin.write", "resource": {"type": "config"}}
		d == {"allow": false, "reason": "subject's tenant claim is not a non-empty string"}
	}
	not admin.allow with input as {"subject": {"sub": "t", "roles": ["admin"], "tenant": null}, "action": "admin.write", "resource": {"type": "quotas", "tenant": null}}
	not admin.allow with input as {"subject": {"sub": "t", "roles": ["admin"], "tenant": ""}, "action": "admin.write", "resource": {"type": "quotas", "tenant": ""}}
}

test_roles_and_attributes_must_be_lists if {
	not admin.allow with input as {"subject": {"sub": "x", "roles": {"r": "admin"}}, "action": "admin.write", "resource": {"type": "config"}}
	not admin.allow with input as {"subject": {"sub": "x", "attributes": {"a": "admin.write"}}, "action": "admin.write", "resource": {"type": "config"}}
	not admin.allow with input as {"subject": {"sub": "x", "roles": "admin"}, "action": "admin.read", "resource": {"type": "config"}}
	not admin.allow with input as {"subject": {"sub": "x", "roles": ["Admin", "ADMIN"]}, "action": "admin.read", "resource": {"type": "config"}}
}
