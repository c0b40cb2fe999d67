# Get-VHDFacts: checks a list of virtual disk files with Test-VHD (the file and its parent chain)
# and reads them with Get-VHD (format, type, sizes, parent, disk identifier, attached).
# Prints one VhdReport document with one entry per path, in order. A missing file is
# exists=false with test_ok and vhd null; a failing Test-VHD or Get-VHD is reported in error
# (test_ok false when Test-VHD failed) instead of stopping the script.
param([string[]]$Path = @())
$ErrorActionPreference = 'Stop'

function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
}

function ConvertTo-HvmVhdInfo($vhd) {
    $parent = $null
    if ($vhd.ParentPath) { $parent = [string]$vhd.ParentPath }
    return [pscustomobject]@{
        path            = [string]$vhd.Path
        format          = [string]$vhd.VhdFormat
        type            = [string]$vhd.VhdType
        file_size       = [int64]$vhd.FileSize
        size            = [int64]$vhd.Size
        parent_path     = $parent
        disk_identifier = [string]$vhd.DiskIdentifier
        attached        = [bool]$vhd.Attached
    }
}

$paths = @()
if ($null -ne $Path) { $paths = @($Path) }

$disks = [System.Collections.Generic.List[object]]::new()
foreach ($p in $paths) {
    $text = [string]$p
    $exists = $false
    $testOk = $null
    $info = $null
    $problems = [System.Collections.Generic.List[string]]::new()
    if (-not (Test-HvmAbsolutePath $text)) {
        $problems.Add('not an absolute path')
    } elseif (Test-Path -LiteralPath $text -PathType Leaf) {
        $exists = $true
        try {
            $result = @(Test-VHD -Path $text -ErrorAction Stop)
            $testOk = ($result.Count -gt 0 -and $result[0] -eq $true)
            if (-not $testOk) { $problems.Add('Test-VHD found the disk or its parent chain unusable') }
        } catch {
            $testOk = $false
            $problems.Add("Test-VHD: $($_.Exception.Message)")
        }
        try {
            $info = ConvertTo-HvmVhdInfo (Get-VHD -Path $text -ErrorAction Stop)
        } catch {
            $info = $null
            $problems.Add("Get-VHD: $($_.Exception.Message)")
        }
    }
    $check = [pscustomobject]@{
        path    = $text
        exists  = $exists
        test_ok = $testOk
        vhd     = $info
        error   = ($problems -join '; ')
    }
    $disks.Add($check)
}

$out = [pscustomobject]@{
    disks = $disks.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
