-- The preset dictionary for packing the emulator's ARM records at rest (resource_index.lua,
-- core/json_pack.c): what one customer's onboarding stores, as the records' compact JSON with
-- sorted keys, one record a line, the most frequent kinds last (DEFLATE codes nearer matches
-- shorter). Only memory holds packed records (state files hold their text), so this may change
-- freely; docs/performance.md has what it saves.
return table.concat({
  '{"body":{"id":"/subscriptions/5b000000-0000-4000-8000-000000000001/resourceGroups/rg-cmk-contoso' ..
    '","location":"westeurope","name":"rg-cmk-contoso","properties":{"provisioningState":"Succeeded"}' ..
    ',"tags":{"customer":"contoso","managed-by":"cmkflow"},"type":"Microsoft.Resources/resourceGroups' ..
    '"},"id":"/subscriptions/5b000000-0000-4000-8000-000000000001/resourceGroups/rg-cmk-contoso","int' ..
    'ernal":{},"resource_group":"rg-cmk-contoso","subscription":"5b000000-0000-4000-8000-000000000001' ..
    '","tenant":"c0000000-0000-4000-8000-000000000001","type":"Microsoft.Resources/resourceGroups","v' ..
    'isible_at":1796387252}',
  '{"body":{"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmkflow-isv' ..
    '","location":"westeurope","name":"rg-cmkflow-isv","properties":{"provisioningState":"Succeeded"}' ..
    ',"tags":{"customer":"contoso","managed-by":"cmkflow"},"type":"Microsoft.Resources/resourceGroups' ..
    '"},"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmkflow-isv","int' ..
    'ernal":{},"resource_group":"rg-cmkflow-isv","subscription":"1a2b3c4d-0000-4000-8000-00000000a001' ..
    '","tenant":"7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Resources/resourceGroups","v' ..
    'isible_at":1796387252}',
  '{"body":{"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmk-data-co' ..
    'ntoso","location":"westeurope","name":"rg-cmk-data-contoso","properties":{"provisioningState":"S' ..
    'ucceeded"},"tags":{"customer":"contoso","managed-by":"cmkflow"},"type":"Microsoft.Resources/reso' ..
    'urceGroups"},"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmk-dat' ..
    'a-contoso","internal":{},"resource_group":"rg-cmk-data-contoso","subscription":"1a2b3c4d-0000-40' ..
    '00-8000-00000000a001","tenant":"7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Resource' ..
    's/resourceGroups","visible_at":1796387252}',
  '{"body":{"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmkflow-isv' ..
    '/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-cmkflow-cmk","location":"westeu' ..
    'rope","name":"uami-cmkflow-cmk","properties":{"clientId":"2bb371a2-60e1-5760-b82a-533537212505",' ..
    '"isolationScope":"None","principalId":"6a395f5f-d474-5e7a-adf9-f740724a4766","tenantId":"7f0d6a2' ..
    'e-5b1c-4c8e-9a3d-1e2f3a4b5c6d"},"tags":{"customer":"contoso","managed-by":"cmkflow"},"type":"Mic' ..
    'rosoft.ManagedIdentity/userAssignedIdentities"},"id":"/subscriptions/1a2b3c4d-0000-4000-8000-000' ..
    '00000a001/resourceGroups/rg-cmkflow-isv/providers/Microsoft.ManagedIdentity/userAssignedIdentiti' ..
    'es/uami-cmkflow-cmk","internal":{},"resource_group":"rg-cmkflow-isv","subscription":"1a2b3c4d-00' ..
    '00-4000-8000-00000000a001","tenant":"7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Man' ..
    'agedIdentity/userAssignedIdentities","visible_at":1796387252}',
  '{"body":{"id":"/subscriptions/5b000000-0000-4000-8000-000000000001/resourceGroups/rg-cmk-contoso' ..
    '/providers/Microsoft.KeyVault/vaults/kv-contoso-42c1b6","location":"westeurope","name":"kv-conto' ..
    'so-42c1b6","properties":{"accessPolicies":[],"enablePurgeProtection":true,"enableRbacAuthorizati' ..
    'on":true,"enableSoftDelete":true,"provisioningState":"Succeeded","publicNetworkAccess":"Enabled"' ..
    ',"sku":{"family":"A","name":"standard"},"softDeleteRetentionInDays":90,"tenantId":"c0000000-0000' ..
    '-4000-8000-000000000001","vaultUri":"https://kv-contoso-42c1b6.vault.azure.net/"},"systemData":{' ..
    '"createdAt":"2026-12-04T12:27:32Z","createdBy":"a0000000-0000-4000-8000-000000000001","createdBy' ..
    'Type":"Application","lastModifiedAt":"2026-12-04T12:27:32Z","lastModifiedBy":"a0000000-0000-4000' ..
    '-8000-000000000001","lastModifiedByType":"Application"},"tags":{"customer":"contoso","managed-by' ..
    '":"cmkflow"},"type":"Microsoft.KeyVault/vaults"},"id":"/subscriptions/5b000000-0000-4000-8000-00' ..
    '0000000001/resourceGroups/rg-cmk-contoso/providers/Microsoft.KeyVault/vaults/kv-contoso-42c1b6",' ..
    '"internal":{"dns_at":1796387252},"resource_group":"rg-cmk-contoso","subscription":"5b000000-0000' ..
    '-4000-8000-000000000001","tenant":"c0000000-0000-4000-8000-000000000001","type":"Microsoft.KeyVa' ..
    'ult/vaults","visible_at":1796387252}',
  '{"body":{"etag":"\\"0x6B12B1B4\\"","id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resou' ..
    'rceGroups/rg-cmk-data-contoso/providers/Microsoft.Storage/storageAccounts/stcontoso01f2bec5/blob' ..
    'Services/default/containers/cmkflow-verify","name":"cmkflow-verify","properties":{"deleted":fals' ..
    'e,"hasImmutabilityPolicy":false,"hasLegalHold":false,"lastModifiedTime":"2026-12-04T12:27:32Z","' ..
    'leaseState":"Available","leaseStatus":"Unlocked","publicAccess":"None","remainingRetentionDays":' ..
    '0},"type":"Microsoft.Storage/storageAccounts/blobServices/containers"},"id":"/subscriptions/1a2b' ..
    '3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmk-data-contoso/providers/Microsoft.Storage/' ..
    'storageAccounts/stcontoso01f2bec5/blobServices/default/containers/cmkflow-verify","internal":{},' ..
    '"resource_group":"rg-cmk-data-contoso","subscription":"1a2b3c4d-0000-4000-8000-00000000a001","te' ..
    'nant":"7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Storage/storageAccounts/blobServi' ..
    'ces/containers","visible_at":1796387252}',
  '{"body":{"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/providers/Microsoft.Authoriza' ..
    'tion/roleAssignments/3d9c35ac-61c7-5b1b-9f56-e30e808b93ee","name":"3d9c35ac-61c7-5b1b-9f56-e30e8' ..
    '08b93ee","properties":{"createdOn":"2026-12-04T12:27:32Z","principalId":"a83be5d1-e359-5130-9cf1' ..
    '-03c7729c92ae","principalType":"ServicePrincipal","roleDefinitionId":"/subscriptions/1a2b3c4d-00' ..
    '00-4000-8000-00000000a001/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a' ..
    '75c-2fe8c4bcb635","scope":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001","updatedOn":"202' ..
    '6-12-04T12:27:32Z"},"type":"Microsoft.Authorization/roleAssignments"},"id":"/subscriptions/1a2b3' ..
    'c4d-0000-4000-8000-00000000a001/providers/Microsoft.Authorization/roleAssignments/3d9c35ac-61c7-' ..
    '5b1b-9f56-e30e808b93ee","subscription":"1a2b3c4d-0000-4000-8000-00000000a001","tenant":"7f0d6a2e' ..
    '-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Authorization/roleAssignments","visible_at":1796' ..
    '387252}',
  '{"body":{"id":"/subscriptions/5b000000-0000-4000-8000-000000000001/resourceGroups/rg-cmk-contoso' ..
    '/providers/Microsoft.KeyVault/vaults/kv-contoso-42c1b6/keys/cmk-contoso/providers/Microsoft.Auth' ..
    'orization/roleAssignments/7c1e8402-1a12-5777-be85-0ee7aa500a0a","name":"7c1e8402-1a12-5777-be85-' ..
    '0ee7aa500a0a","properties":{"createdBy":"73705aa5-6087-5119-b55a-b7f111f6a488","createdOn":"2026' ..
    '-12-04T12:27:32Z","principalId":"e9e5efc5-685d-5824-812a-7e977e0b71df","principalType":"ServiceP' ..
    'rincipal","roleDefinitionId":"/subscriptions/5b000000-0000-4000-8000-000000000001/providers/Micr' ..
    'osoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6","scope":"/subscription' ..
    's/5b000000-0000-4000-8000-000000000001/resourceGroups/rg-cmk-contoso/providers/Microsoft.KeyVaul' ..
    't/vaults/kv-contoso-42c1b6/keys/cmk-contoso","updatedBy":"73705aa5-6087-5119-b55a-b7f111f6a488",' ..
    '"updatedOn":"2026-12-04T12:27:32Z"},"type":"Microsoft.Authorization/roleAssignments"},"id":"/sub' ..
    'scriptions/5b000000-0000-4000-8000-000000000001/resourceGroups/rg-cmk-contoso/providers/Microsof' ..
    't.KeyVault/vaults/kv-contoso-42c1b6/keys/cmk-contoso/providers/Microsoft.Authorization/roleAssig' ..
    'nments/7c1e8402-1a12-5777-be85-0ee7aa500a0a","subscription":"5b000000-0000-4000-8000-00000000000' ..
    '1","tenant":"c0000000-0000-4000-8000-000000000001","type":"Microsoft.Authorization/roleAssignmen' ..
    'ts","visible_at":1796387252}',
  '{"body":{"id":"/subscriptions/5b000000-0000-4000-8000-000000000001/providers/Microsoft.Authoriza' ..
    'tion/roleAssignments/11732698-35c7-5500-8af9-1a63968d0fc0","name":"11732698-35c7-5500-8af9-1a639' ..
    '68d0fc0","properties":{"createdOn":"2026-12-04T12:27:32Z","principalId":"73705aa5-6087-5119-b55a' ..
    '-b7f111f6a488","principalType":"ServicePrincipal","roleDefinitionId":"/subscriptions/5b000000-00' ..
    '00-4000-8000-000000000001/providers/Microsoft.Authorization/roleDefinitions/14b46e9e-c2b7-41b4-b' ..
    '07b-48a6ebf60603","scope":"/subscriptions/5b000000-0000-4000-8000-000000000001","updatedOn":"202' ..
    '6-12-04T12:27:32Z"},"type":"Microsoft.Authorization/roleAssignments"},"id":"/subscriptions/5b000' ..
    '000-0000-4000-8000-000000000001/providers/Microsoft.Authorization/roleAssignments/11732698-35c7-' ..
    '5500-8af9-1a63968d0fc0","subscription":"5b000000-0000-4000-8000-000000000001","tenant":"c0000000' ..
    '-0000-4000-8000-000000000001","type":"Microsoft.Authorization/roleAssignments","visible_at":1796' ..
    '387252}',
  '{"body":{"id":"/subscriptions/5b000000-0000-4000-8000-000000000001/providers/Microsoft.Authoriza' ..
    'tion/roleAssignments/764cfc2f-0c3f-5f08-9155-45c73ec1b12b","name":"764cfc2f-0c3f-5f08-9155-45c73' ..
    'ec1b12b","properties":{"createdOn":"2026-12-04T12:27:32Z","principalId":"73705aa5-6087-5119-b55a' ..
    '-b7f111f6a488","principalType":"ServicePrincipal","roleDefinitionId":"/subscriptions/5b000000-00' ..
    '00-4000-8000-000000000001/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a' ..
    '75c-2fe8c4bcb635","scope":"/subscriptions/5b000000-0000-4000-8000-000000000001","updatedOn":"202' ..
    '6-12-04T12:27:32Z"},"type":"Microsoft.Authorization/roleAssignments"},"id":"/subscriptions/5b000' ..
    '000-0000-4000-8000-000000000001/providers/Microsoft.Authorization/roleAssignments/764cfc2f-0c3f-' ..
    '5f08-9155-45c73ec1b12b","subscription":"5b000000-0000-4000-8000-000000000001","tenant":"c0000000' ..
    '-0000-4000-8000-000000000001","type":"Microsoft.Authorization/roleAssignments","visible_at":1796' ..
    '387252}',
  '{"body":{"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/providers/Microsoft.Authoriza' ..
    'tion/roleAssignments/84e1619f-a036-5931-8fec-1c1584519df7","name":"84e1619f-a036-5931-8fec-1c158' ..
    '4519df7","properties":{"createdOn":"2026-12-04T12:27:32Z","principalId":"a83be5d1-e359-5130-9cf1' ..
    '-03c7729c92ae","principalType":"ServicePrincipal","roleDefinitionId":"/subscriptions/1a2b3c4d-00' ..
    '00-4000-8000-00000000a001/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8' ..
    'e65-a410df84e7d1","scope":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001","updatedOn":"202' ..
    '6-12-04T12:27:32Z"},"type":"Microsoft.Authorization/roleAssignments"},"id":"/subscriptions/1a2b3' ..
    'c4d-0000-4000-8000-00000000a001/providers/Microsoft.Authorization/roleAssignments/84e1619f-a036-' ..
    '5931-8fec-1c1584519df7","subscription":"1a2b3c4d-0000-4000-8000-00000000a001","tenant":"7f0d6a2e' ..
    '-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Authorization/roleAssignments","visible_at":1796' ..
    '387252}',
  '{"body":{"id":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmk-data-co' ..
    'ntoso/providers/Microsoft.Storage/storageAccounts/stcontoso01f2bec5","identity":{"type":"UserAss' ..
    'igned","userAssignedIdentities":{"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGr' ..
    'oups/rg-cmkflow-isv/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-cmkflow-cmk"' ..
    ':{"clientId":"2bb371a2-60e1-5760-b82a-533537212505","principalId":"6a395f5f-d474-5e7a-adf9-f7407' ..
    '24a4766"}}},"kind":"StorageV2","location":"westeurope","name":"stcontoso01f2bec5","properties":{' ..
    '"accessTier":"Hot","allowBlobPublicAccess":false,"creationTime":"2026-12-04T12:27:32Z","encrypti' ..
    'on":{"identity":{"federatedIdentityClientId":"dc50e1d3-fa82-5dae-acf2-516fe8d84e8a","userAssigne' ..
    'dIdentity":"/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg-cmkflow-isv/pr' ..
    'oviders/Microsoft.ManagedIdentity/userAssignedIdentities/uami-cmkflow-cmk"},"keySource":"Microso' ..
    'ft.Keyvault","keyvaultproperties":{"currentVersionedKeyIdentifier":"https://kv-contoso-42c1b6.va' ..
    'ult.azure.net/keys/cmk-contoso/9136cf2ba43e50a2be197817a5b6fd31","keyname":"cmk-contoso","keyvau' ..
    'lturi":"https://kv-contoso-42c1b6.vault.azure.net/","keyversion":"","lastKeyRotationTimestamp":"' ..
    '2026-12-04T12:27:32Z"},"requireInfrastructureEncryption":false,"services":{"blob":{"enabled":tru' ..
    'e,"keyType":"Account","lastEnabledTime":"2026-12-04T12:27:32Z"},"file":{"enabled":true,"keyType"' ..
    ':"Account","lastEnabledTime":"2026-12-04T12:27:32Z"}}},"minimumTlsVersion":"TLS1_2","primaryEndp' ..
    'oints":{"blob":"https://stcontoso01f2bec5.blob.core.windows.net/","dfs":"https://stcontoso01f2be' ..
    'c5.dfs.core.windows.net/","file":"https://stcontoso01f2bec5.file.core.windows.net/","queue":"htt' ..
    'ps://stcontoso01f2bec5.queue.core.windows.net/","table":"https://stcontoso01f2bec5.table.core.wi' ..
    'ndows.net/","web":"https://stcontoso01f2bec5.web.core.windows.net/"},"primaryLocation":"westeuro' ..
    'pe","provisioningState":"Succeeded","statusOfPrimary":"available","supportsHttpsTrafficOnly":tru' ..
    'e},"sku":{"name":"Standard_LRS","tier":"Standard"},"tags":{"customer":"contoso","managed-by":"cm' ..
    'kflow"},"type":"Microsoft.Storage/storageAccounts"},"id":"/subscriptions/1a2b3c4d-0000-4000-8000' ..
    '-00000000a001/resourceGroups/rg-cmk-data-contoso/providers/Microsoft.Storage/storageAccounts/stc' ..
    'ontoso01f2bec5","internal":{"operation":"32075f7f-e364-587c-bfdc-5e23a15d9a9c","started":1796387' ..
    '252},"resource_group":"rg-cmk-data-contoso","subscription":"1a2b3c4d-0000-4000-8000-00000000a001' ..
    '","tenant":"7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d","type":"Microsoft.Storage/storageAccounts","vi' ..
    'sible_at":1796387252}',
}, "\n")
