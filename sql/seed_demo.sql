-- Demo and test seed (DESIGN.md section 7, plus st-2 and an off-duty operator
-- for routing tests). Idempotent: re-applying restores these rows exactly.

INSERT INTO stations (id, name) VALUES
    ('st-1', 'Demo station 1'),
    ('st-2', 'Demo station 2')
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;

INSERT INTO citizens (id, verified_phone) VALUES
    ('cit-1', '+15550000001')
ON CONFLICT (id) DO UPDATE SET verified_phone = EXCLUDED.verified_phone;

INSERT INTO staff (id, role, station_id, duty_phone, on_duty) VALUES
    ('op-1',  'operator',   'st-1', '+15550000101', true),
    ('sup-1', 'supervisor', 'st-1', '+15550000201', true),
    ('op-3',  'operator',   'st-1', '+15550000103', false),
    ('op-2',  'operator',   'st-2', '+15550000102', true),
    ('sup-2', 'supervisor', 'st-2', '+15550000202', true)
ON CONFLICT (id) DO UPDATE SET
    role = EXCLUDED.role,
    station_id = EXCLUDED.station_id,
    duty_phone = EXCLUDED.duty_phone,
    on_duty = EXCLUDED.on_duty;
