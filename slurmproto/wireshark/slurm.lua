-- Wireshark dissector for Slurm's RPC protocol (slurmd 6818, slurmctld 6817): the length prefix, the
-- header, the auth section (auth/munge's credential, auth/slurm's token and its claims) and the bodies of
-- the callerid messages.
--
--   tshark -X lua_script:slurm.lua -r capture.pcap -Y slurm
--   (or copy it to ~/.local/lib/wireshark/plugins/)
--
-- The tables below (RELEASES, MSG_TYPES, HEADER, FORWARD, BODIES) follow slurmproto's schemas
-- (slurmproto/versions.py, slurmproto/header.py, slurmproto/messages/); tests/test_wireshark.py checks
-- them against those schemas field by field, so a change there fails until this file follows.

local slurm = Proto("slurm", "Slurm RPC")

-- protocol version, release, then its Layout: extra_header_field, forward_net_cred, forward_tree_depth,
-- step_id_replies. A version takes the row at or below it; below every row, OLDER_LAYOUT.
local RELEASES = {
    {0x2600, "22.05", false, false, false, false},
    {0x2700, "23.02", false, false, false, false},
    {0x2800, "23.11", false, true, false, false},
    {0x2900, "24.05", false, true, false, false},
    {0x2a00, "24.11", false, true, true, false},
    {0x2b00, "25.05", false, true, true, false},
    {0x2c00, "25.11", false, true, true, true},
    {0x2d00, "26.05", false, true, true, true},
}
local OLDER_LAYOUT = {true, false, false, false}

local MSG_TYPES = {
    [2013] = "REQUEST_JOB_ID",
    [2014] = "RESPONSE_JOB_ID",
    [5035] = "REQUEST_NETWORK_CALLERID",
    [5036] = "RESPONSE_NETWORK_CALLERID",
    [8001] = "RESPONSE_SLURM_RC",
    [8002] = "RESPONSE_SLURM_RC_MSG",
    [9001] = "RESPONSE_FORWARD_FAILED",
}

local AUTH_PLUGINS = {[100] = "auth/none", [101] = "auth/munge", [102] = "auth/jwt", [103] = "auth/slurm"}
local SLURM_NO_AUTH_CRED, SLURM_PACK_ADDRS = 0x0040, 0x0080
local AF_INET, AF_INET6 = 2, 10
local MAX_FRAME = 16 * 1024 * 1024  -- a longer length prefix is not followed (as decode --pcap)

-- The header in order: name, kind ("pad" is present only where the layout says so).
local HEADER = {
    {"version", "u16"},
    {"flags", "u16"},
    {"extra_header_field", "pad16", "extra_header_field"},
    {"msg_type", "u16"},
    {"body_length", "u32"},
    {"forward", "forward"},
    {"ret_list", "array"},
    {"orig_addr", "slurm_addr"},
}

-- The forward block: name, kind, condition (forwarding: cnt > 0; net_cred also needs SLURM_PACK_ADDRS).
local FORWARD = {
    {"cnt", "u16"},
    {"nodelist", "packstr", "forwarding"},
    {"timeout", "u32", "forwarding"},
    {"tree_width", "u16", "forwarding"},
    {"net_cred", "packstr", "forward_net_cred"},
    {"tree_depth", "u16", "forward_tree_depth"},
}

-- Bodies by msg_type: name, kind, and the Layout fact a field needs (none: always there).
local BODIES = {
    [5035] = {
        {"ip_src", "packmem"},
        {"ip_dst", "packmem"},
        {"port_src", "u32"},
        {"port_dst", "u32"},
        {"af", "u32"},
    },
    [5036] = {
        {"sluid", "u64", "step_id_replies"},
        {"job_id", "u32"},
        {"step_id", "u32", "step_id_replies"},
        {"step_het_comp", "u32", "step_id_replies"},
        {"return_code", "i32"},
        {"node_name", "packstr"},
    },
    [2013] = {
        {"job_pid", "u32"},
    },
    [2014] = {
        {"sluid", "u64", "step_id_replies"},
        {"job_id", "u32"},
        {"step_id", "u32", "step_id_replies"},
        {"step_het_comp", "u32", "step_id_replies"},
        {"return_code", "i32"},
    },
    [8001] = {
        {"return_code", "i32"},
    },
}

local FACTS = {extra_header_field = 1, forward_net_cred = 2, forward_tree_depth = 3, step_id_replies = 4}

-- --- fields ----------------------------------------------------------------------------------------------

local f = {
    length = ProtoField.uint32("slurm.length", "Length"),
    version = ProtoField.uint16("slurm.version", "Protocol version", base.HEX),
    release = ProtoField.string("slurm.release", "Release"),
    flags = ProtoField.uint16("slurm.flags", "Flags", base.HEX),
    flag_no_auth = ProtoField.bool("slurm.flags.no_auth_cred", "SLURM_NO_AUTH_CRED", 16, nil, SLURM_NO_AUTH_CRED),
    flag_pack_addrs = ProtoField.bool("slurm.flags.pack_addrs", "SLURM_PACK_ADDRS", 16, nil, SLURM_PACK_ADDRS),
    msg_type = ProtoField.uint16("slurm.msg_type", "Message type", base.DEC, MSG_TYPES),
    body_length = ProtoField.uint32("slurm.body_length", "Body length"),
    forward_cnt = ProtoField.uint16("slurm.forward.cnt", "Forward count"),
    forward_nodelist = ProtoField.string("slurm.forward.nodelist", "Forward nodelist"),
    forward_timeout = ProtoField.uint32("slurm.forward.timeout", "Forward timeout"),
    forward_tree_width = ProtoField.uint16("slurm.forward.tree_width", "Forward tree width"),
    forward_net_cred = ProtoField.string("slurm.forward.net_cred", "Forward net_cred"),
    forward_tree_depth = ProtoField.uint16("slurm.forward.tree_depth", "Forward tree depth"),
    ret_cnt = ProtoField.uint16("slurm.ret_list.cnt", "ret_list count"),
    orig_family = ProtoField.uint16("slurm.orig_addr.family", "orig_addr family"),
    orig_ipv4 = ProtoField.ipv4("slurm.orig_addr.ipv4", "orig_addr"),
    orig_ipv6 = ProtoField.ipv6("slurm.orig_addr.ipv6", "orig_addr"),
    orig_port = ProtoField.uint16("slurm.orig_addr.port", "orig_addr port"),
    auth_plugin = ProtoField.uint32("slurm.auth.plugin_id", "Auth plugin", base.DEC, AUTH_PLUGINS),
    auth_credential = ProtoField.string("slurm.auth.credential", "Credential"),
    munge = ProtoField.string("slurm.auth.munge", "MUNGE credential"),
    token = ProtoField.string("slurm.auth.token", "auth/slurm token"),
    token_header = ProtoField.string("slurm.auth.token.header", "Token header"),
    token_claims = ProtoField.string("slurm.auth.token.claims", "Token claims"),
    token_uid = ProtoField.uint32("slurm.auth.token.uid", "Token uid"),
    token_ver = ProtoField.uint16("slurm.auth.token.ver", "Token protocol version", base.HEX),
    body = ProtoField.bytes("slurm.body", "Body"),
    ip_src_v4 = ProtoField.ipv4("slurm.ip_src.ipv4", "ip_src"),
    ip_src_v6 = ProtoField.ipv6("slurm.ip_src.ipv6", "ip_src"),
    ip_dst_v4 = ProtoField.ipv4("slurm.ip_dst.ipv4", "ip_dst"),
    ip_dst_v6 = ProtoField.ipv6("slurm.ip_dst.ipv6", "ip_dst"),
}
local KINDS = {
    u16 = ProtoField.uint16, u32 = ProtoField.uint32, i32 = ProtoField.int32, u64 = ProtoField.uint64,
    packstr = ProtoField.string, packmem = ProtoField.bytes,
}
local body_fields = {}
for _, fields in pairs(BODIES) do
    for _, field in ipairs(fields) do
        local name, kind = field[1], field[2]
        if not body_fields[name] then
            body_fields[name] = KINDS[kind]("slurm." .. name, name)
            f["body_" .. name] = body_fields[name]
        end
    end
end
local field_list = {}
for _, field in pairs(f) do field_list[#field_list + 1] = field end
slurm.fields = field_list

local e_malformed = ProtoExpert.new("slurm.malformed", "Malformed Slurm frame", expert.group.MALFORMED,
                                    expert.severity.ERROR)
slurm.experts = {e_malformed}

-- --- reading -------------------------------------------------------------------------------------------

local function layout_of(version)
    local found = OLDER_LAYOUT
    local name = string.format("0x%04x", version)
    for _, row in ipairs(RELEASES) do
        if row[1] <= version then
            found = {row[3], row[4], row[5], row[6]}
            if row[1] == version then name = row[2] end
        end
    end
    return found, name
end

-- A packstr at `o`: its range (without the NUL), its text, and the offset after it.
local function packstr(tvb, o)
    local n = tvb(o, 4):uint()
    if n == 0 then return tvb(o, 4), nil, o + 4 end
    local text = tvb(o + 4, n):raw()
    if text:sub(-1) == "\0" then text = text:sub(1, -2) end
    return tvb(o, 4 + n), text, o + 4 + n
end

local function packmem(tvb, o)
    local n = tvb(o, 4):uint()
    return tvb(o, 4 + n), o + 4 + n
end

local function b64url(text)
    local s = text:gsub("-", "+"):gsub("_", "/")
    s = s .. string.rep("=", (4 - #s % 4) % 4)
    return ByteArray.new(s, true):base64_decode():raw()
end

local function add_auth(tvb, tree, o)
    local sub = tree:add(slurm, tvb(o), "Auth section")
    local plugin = tvb(o, 4):uint()
    sub:add(f.auth_plugin, tvb(o, 4))
    o = o + 4
    if plugin ~= 101 and plugin ~= 103 then
        sub:add_proto_expert_info(e_malformed, "auth plugin without a packstr credential")
        return nil
    end
    local range, text
    range, text, o = packstr(tvb, o)
    sub:set_len(4 + range:len())
    if text == nil then return o end
    if plugin == 101 then
        sub:add(f.munge, range, text)
        return o
    end
    local t = sub:add(f.token, range, text)
    local head, claims = text:match("^([%w_-]+)%.([%w_-]+)%.")
    if head then
        t:add(f.token_header, range, b64url(head))
        local json = b64url(claims)
        t:add(f.token_claims, range, json)
        local uid = json:match('"uid"%s*:%s*(%d+)')
        if uid then t:add(f.token_uid, range, tonumber(uid)) end
        local ver = json:match('"ver"%s*:%s*(%d+)')
        if ver then t:add(f.token_ver, range, tonumber(ver)) end
    end
    return o
end

local function add_body(tvb, tree, o, length, msg_type, layout)
    local sub = tree:add(f.body, tvb(o, length))
    local fields = BODIES[msg_type]
    if fields == nil then return end
    local stop = o + length
    local at = o
    for _, field in ipairs(fields) do
        local name, kind, fact = field[1], field[2], field[3]
        if fact == nil or layout[FACTS[fact]] then
            local size = ({u16 = 2, u32 = 4, i32 = 4, u64 = 8})[kind]
            if kind == "packstr" then
                local range, text, after = packstr(tvb, at)
                sub:add(body_fields[name], range, text or "(null)")
                at = after
            elseif kind == "packmem" then
                local range, after = packmem(tvb, at)
                sub:add(body_fields[name], range:range(4))
                at = after
            else
                sub:add(body_fields[name], tvb(at, size))
                at = at + size
            end
        end
    end
    if msg_type == 5035 and at == stop then  -- the callerid request's addresses, by its af
        local af = tvb(o + 48, 4):uint()
        if af == AF_INET then
            sub:add(f.ip_src_v4, tvb(o + 4, 4))
            sub:add(f.ip_dst_v4, tvb(o + 24, 4))
        elseif af == AF_INET6 then
            sub:add(f.ip_src_v6, tvb(o + 4, 16))
            sub:add(f.ip_dst_v6, tvb(o + 24, 16))
        end
    end
    if at ~= stop then sub:add_proto_expert_info(e_malformed, "body does not match its schema") end
end

local function add_frame(tvb, pinfo, tree)
    local t = tree:add(slurm, tvb(), "Slurm RPC")
    t:add(f.length, tvb(0, 4))
    local version = tvb(4, 2):uint()
    local layout, release = layout_of(version)
    t:add(f.version, tvb(4, 2))
    t:add(f.release, tvb(4, 2), release)
    local flags = tvb(6, 2):uint()
    local ft = t:add(f.flags, tvb(6, 2))
    ft:add(f.flag_no_auth, tvb(6, 2))
    ft:add(f.flag_pack_addrs, tvb(6, 2))
    local o = 8
    if layout[FACTS.extra_header_field] then o = o + 2 end
    local msg_type = tvb(o, 2):uint()
    t:add(f.msg_type, tvb(o, 2))
    local body_length = tvb(o + 2, 4):uint()
    t:add(f.body_length, tvb(o + 2, 4))
    o = o + 6
    local cnt = tvb(o, 2):uint()
    t:add(f.forward_cnt, tvb(o, 2))
    o = o + 2
    if cnt > 0 then
        local range, text
        range, text, o = packstr(tvb, o)
        t:add(f.forward_nodelist, range, text or "(null)")
        t:add(f.forward_timeout, tvb(o, 4))
        t:add(f.forward_tree_width, tvb(o + 4, 2))
        o = o + 6
        if layout[FACTS.forward_net_cred] and bit32.band(flags, SLURM_PACK_ADDRS) ~= 0 then
            range, text, o = packstr(tvb, o)
            t:add(f.forward_net_cred, range, text or "(null)")
        end
        if layout[FACTS.forward_tree_depth] then
            t:add(f.forward_tree_depth, tvb(o, 2))
            o = o + 2
        end
    end
    local rets = tvb(o, 2):uint()
    t:add(f.ret_cnt, tvb(o, 2))
    o = o + 2
    if rets > 0 then  -- entries hold whole messages: the rest is not followed
        t:add_proto_expert_info(e_malformed, "ret_list entries are not dissected")
        return msg_type, version
    end
    local family = tvb(o, 2):uint()
    t:add(f.orig_family, tvb(o, 2))
    o = o + 2
    if family == AF_INET then  -- packed byte-reversed by a little-endian daemon (slurm_pack_addr)
        t:add_le(f.orig_ipv4, tvb(o, 4))
        t:add_le(f.orig_port, tvb(o + 4, 2))
        o = o + 6
    elseif family == AF_INET6 then
        t:add(f.orig_ipv6, tvb(o + 4, 16))
        t:add_le(f.orig_port, tvb(o + 20, 2))
        o = o + 22
    end
    if bit32.band(flags, SLURM_NO_AUTH_CRED) == 0 then
        o = add_auth(tvb, t, o)
        if o == nil then return msg_type, version end
    end
    add_body(tvb, t, o, body_length, msg_type, layout)
    if o + body_length ~= tvb:len() then t:add_proto_expert_info(e_malformed, "body_length does not match") end
    return msg_type, version
end

function slurm.dissector(tvb, pinfo, tree)
    local offset, total = 0, tvb:len()
    local names = {}
    while offset < total do
        if total - offset < 4 then
            pinfo.desegment_offset, pinfo.desegment_len = offset, DESEGMENT_ONE_MORE_SEGMENT
            return total
        end
        if tvb(offset, 4):raw() == "HTTP" then return offset end
        local length = tvb(offset, 4):uint()
        if length > MAX_FRAME or length < 10 then return offset end
        if total - offset < 4 + length then
            pinfo.desegment_offset, pinfo.desegment_len = offset, 4 + length - (total - offset)
            return total
        end
        local ok, msg_type = pcall(add_frame, tvb(offset, 4 + length):tvb(), pinfo, tree)
        if ok then
            names[#names + 1] = MSG_TYPES[msg_type] or tostring(msg_type)
        else
            tree:add_proto_expert_info(e_malformed, tostring(msg_type))
            names[#names + 1] = "malformed"
        end
        offset = offset + 4 + length
    end
    pinfo.cols.protocol = "Slurm"
    pinfo.cols.info = table.concat(names, ", ")
    return offset
end

-- Other ports: Analyze > Decode As > TCP port > SLURM (or tshark -d tcp.port==N,slurm).
DissectorTable.get("tcp.port"):add("6817,6818", slurm)
