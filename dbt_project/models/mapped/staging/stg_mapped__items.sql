-- One row per item of the mapping's items table: item_id and every item_attr_<name> column as the
-- import typed it (none when the mapping has no items table: the key column alone). A static
-- snapshot, overwritten on each import: attributes are today's, on every feature date.
-- (macros/staging.sql)
{{ side_table(source('bronze', 'mapped_items'), 'item_id') }}
