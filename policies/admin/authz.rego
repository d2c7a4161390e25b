# Who may do what on the control plane (ABAC). The control plane evaluates `decision` for every
# request with:
#   input.subject  {sub, roles: [..], attributes: [..], tenant?}   from the verified bearer JWT
#   input.action   "admin.read" | "admin.write" | "dlp.review" | "dlp.detokenize" | "proxy.sync"
#                  | "plugins.write"
#   input.resource {type, id?, tenant?}   tenant set when the resource belongs to one tenant
#   input.context  {justification?}
# Roles grant attributes; a token may also carry attributes directly. A tenant-scoped subject
# (one with a tenant claim) acts only on resources of that tenant, never on global ones.
# plugins.write (upload a signed plugin package) is its own attribute, not part of admin.write:
# a plugin is code, and an operator who edits routes need not be able to publish code. Plugins
# are global resources, so a tenant-scoped subject never uploads one.
package intelgraph.admin

role_attributes := {
	"admin": {"admin.read", "admin.write", "dlp.review", "dlp.detokenize", "plugins.write"},
	"operator": {"admin.read", "admin.write"},
	"viewer": {"admin.read"},
	"dlp-reviewer": {"admin.read", "dlp.review"},
	"dlp-officer": {"dlp.review", "dlp.detokenize"},
	"proxy": {"proxy.sync"},
	"plugin-publisher": {"plugins.write"},
}

known_actions := {"admin.read", "admin.write", "dlp.review", "dlp.detokenize", "proxy.sync", "plugins.write"}

# Roles and attributes are lists of strings: `in` would also walk an object's values
# ({"x": "admin"}) and grant what the token never listed.
granted contains a if {
	is_array(input.subject.roles)
	some role in input.subject.roles
	some a in role_attributes[role]
}

granted contains a if {
	is_array(input.subject.attributes)
	some a in input.subject.attributes
	a in known_actions
}

# Any tenant claim scopes the subject, whatever its value: one that is not a usable id (null, a
# number, a list, "") must not read as "no tenant", which would mean every tenant.
tenant_scoped if {
	some key, _ in input.subject
	key == "tenant"
}

valid_tenant if {
	is_string(input.subject.tenant)
	input.subject.tenant != ""
}

in_scope if not tenant_scoped

in_scope if {
	valid_tenant
	input.resource.tenant == input.subject.tenant
}

justified if {
	input.action != "dlp.detokenize"
}

justified if {
	input.action == "dlp.detokenize"
	is_string(input.context.justification)
	count(trim_space(input.context.justification)) >= 8
}

default allow := false

allow if {
	input.action in known_actions
	input.action in granted
	in_scope
	justified
}

default reason := "denied"

reason := "allowed" if allow

reason := concat("", ["unknown action \"", input.action, "\""]) if {
	not input.action in known_actions
}

reason := concat("", ["subject lacks the \"", input.action, "\" attribute"]) if {
	input.action in known_actions
	not input.action in granted
}

reason := concat("", ["subject is scoped to tenant \"", input.subject.tenant, "\"; this resource is outside it"]) if {
	input.action in known_actions
	input.action in granted
	valid_tenant
	not in_scope
}

reason := "subject's tenant claim is not a non-empty string" if {
	input.action in known_actions
	input.action in granted
	tenant_scoped
	not valid_tenant
}

reason := "detokenize needs a justification of at least 8 characters (x-justification header)" if {
	input.action in known_actions
	input.action in granted
	in_scope
	not justified
}

decision := {"allow": allow, "reason": reason}
