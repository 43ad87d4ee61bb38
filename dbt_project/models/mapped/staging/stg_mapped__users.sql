-- One row per user of the mapping's users table: user_id and every user_attr_<name> column as the
-- import typed it (none when the mapping has no users table: the key column alone). A static
-- snapshot, overwritten on each import: attributes are today's, on every feature date.
-- (macros/staging.sql)
{{ side_table(source('bronze', 'mapped_users'), 'user_id') }}
